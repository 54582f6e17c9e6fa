-- no-transaction
-- Contract step of 20261201000002_nodes_viz: `/viz` has read through nodes_viz since that
-- release, and a release has landed since, so no colour that can still be live reads nodes_xyz.
-- Dropping it takes the cube GiST insert (a quarter of PostgreSQL's time in the write-heavy
-- bench, most of it the cube opclass's quadratic page split) off every write of a node: the
-- creation, and the pipeline's claim and completion, which change `analysis_status` and so are
-- never HOT updates. The `cube` extension stays (dropping it buys nothing).
-- CONCURRENTLY: no lock that blocks the writes of the colour still serving while it runs.
DROP INDEX CONCURRENTLY IF EXISTS nodes_xyz;
