-- no-transaction
-- Contract step of 20261126000003_nodes_xyz: `/viz` has queried through nodes_xyz since that
-- release, so no release that can still be live (the previous colour included) reads nodes_xy.
-- Dropping it takes one GiST insert off every write of a node: the creation and, since the
-- pipeline's claim and completion change `analysis_status` (a column of the partial indexes'
-- predicates, so never a HOT update), both of those updates too.
-- CONCURRENTLY: no lock that blocks the writes of the colour still serving while it runs.
DROP INDEX CONCURRENTLY IF EXISTS nodes_xy;
