-- Shared by every script that builds a key or reads a record (prepended to it): ARGV[1], the
-- partition's key scheme and the wire format (streamer/features/store.py: _scheme), so no
-- script spells a key, a field position or an enum value itself.
local scheme = cjson.decode(ARGV[1])
local keys, wire = scheme.keys, scheme.wire
-- key ``name`` of series s (streamer/features/keys.py: SERIES_KEYS), of bucket b for a
-- per-bucket one
local function series_key(s, name, b)
  return keys.series .. s .. keys.names[name] .. (b or '')
end
-- the partition's per-bucket key ``name`` of bucket b (keys.py: PARTITION_BUCKET_KEYS)
local function bucket_key(name, b) return keys.buckets[name] .. b end
-- each record's field positions by name (streamer/features/codec.py: RECORDS): an event
-- array holds its kind at F.event.kind
local F = {}
for record, names in pairs(wire.records) do
  F[record] = {}
  for i, name in ipairs(names) do F[record][name] = i end
end
-- a record as its array, from its fields by name
local function record(name, values)
  local out = {}
  for i, field in ipairs(wire.records[name]) do out[i] = values[field] end
  return out
end
-- enum values by lower-case name (codec.py: ENUMS)
local STATUS, KIND, ALERT = wire.enums.status, wire.enums.kind, wire.enums.alert
