-- Tree keys, step 2 of 4: one composite foreign key, (parent_id, root_id) -> (id, root_id), in
-- place of the two keys parent_id -> id and root_id -> id (dropped in step 3). A child's key says
-- that its parent exists and that the child is in its parent's tree; a root (parent_id NULL) is
-- not checked by it (MATCH SIMPLE) and is its own root by the table's CHECK. By induction every
-- node's root_id is the root of its tree, which the two old keys did not say (they let a child
-- name any node as its root). It also costs fewer checks: one per child and none per root,
-- instead of one per node for the root plus one per child for the parent; each check is a
-- look-up and a row lock, run once per inserted row (api/README.md, Benchmark, ninth round).
--
-- NOT VALID: adding the key takes a brief lock and checks only rows written from now on; step 3
-- checks the rows already stored without blocking writes. Every version of the API has written a
-- child with its parent's root, so the previous colour's writes pass the new key.
SET LOCAL lock_timeout = '10s';
ALTER TABLE nodes ADD CONSTRAINT nodes_parent_root_fkey
    FOREIGN KEY (parent_id, root_id) REFERENCES nodes (id, root_id) NOT VALID;
