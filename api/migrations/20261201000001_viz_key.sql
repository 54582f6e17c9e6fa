-- /viz, expand step 1 of 2: the Morton (Z-order) key of a position, which the B-tree index
-- nodes_viz (next migration) orders nodes by. Each axis is cut into cells one unit wide,
-- numbered 0..2^21-1 with the origin at 2^20 (a coordinate beyond sits in the edge cell); the key
-- interleaves the three cell numbers bit by bit, x lowest. The API computes the same key
-- (api/src/domain/viz_key.rs, tested against this function) to turn a cube into key ranges.
--
-- Never change this function: nodes_viz stores its answers. A different key is a new function
-- and a new index. PL/pgSQL because the bit spreading uses each intermediate twice, which a SQL
-- function could only inline by copying its argument (about 1.5 us a call on the bench machine).
CREATE FUNCTION mutr_viz_key(x double precision, y double precision, z double precision)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    cells bigint[] := ARRAY[
        least(greatest(floor(x) + 1048576, 0), 2097151)::bigint,
        least(greatest(floor(y) + 1048576, 0), 2097151)::bigint,
        least(greatest(floor(z) + 1048576, 0), 2097151)::bigint];
    v bigint;
    key bigint := 0;
BEGIN
    FOR i IN 1..3 LOOP
        v := cells[i];
        -- 0x001f00000000ffff, 0x001f0000ff0000ff, 0x100f00f00f00f00f, 0x10c30c30c30c30c3,
        -- 0x1249249249249249: each of the 21 bits moves to every third bit.
        v := (v | (v << 32)) & 8725724278095871;
        v := (v | (v << 16)) & 8725728556220671;
        v := (v | (v << 8)) & 1157144660301377551;
        v := (v | (v << 4)) & 1207822528635744451;
        v := (v | (v << 2)) & 1317624576693539401;
        key := key | (v << (i - 1));
    END LOOP;
    RETURN key;
END
$$;
