-- Shared by every script that builds a key (prepended to it): the partition's key scheme,
-- ARGV[1] (streamer/features/keys.py: lua_keys), so no script spells a key itself.
local keys = cjson.decode(ARGV[1])
-- key ``name`` of series s (keys.py: SERIES_KEYS), of bucket b for a per-bucket one
local function series_key(s, name, b)
  return keys.series .. s .. keys.names[name] .. (b or '')
end
-- the partition's per-bucket key ``name`` of bucket b (keys.py: PARTITION_BUCKET_KEYS)
local function bucket_key(name, b) return keys.buckets[name] .. b end
