-- no-transaction
-- Tree keys, step 4 of 4: nodes_root_key (root_id, id) serves every use nodes_root_id (root_id)
-- had, so one B-tree insert per node less. CONCURRENTLY: no lock that blocks writes.
DROP INDEX CONCURRENTLY IF EXISTS nodes_root_id;
