-- Tree keys, step 3 of 4: check the stored rows against nodes_parent_root_fkey, then drop the two
-- keys it replaces. VALIDATE holds only a SHARE UPDATE EXCLUSIVE lock while it scans, so the
-- colour still serving keeps writing; dropping the old keys takes a brief exclusive lock at the
-- end. No version of the API reads or names these constraints: the creation statement skips a
-- node whose parent is missing before inserting it, so the keys are a guard, not a code path.
-- If validation fails, a stored child names a root other than its parent's: the migration stops
-- with the offending key in PostgreSQL's message and nothing of this step is applied.
SET LOCAL lock_timeout = '10s';
ALTER TABLE nodes VALIDATE CONSTRAINT nodes_parent_root_fkey;
ALTER TABLE nodes DROP CONSTRAINT IF EXISTS nodes_parent_id_fkey,
                  DROP CONSTRAINT IF EXISTS nodes_root_id_fkey;
