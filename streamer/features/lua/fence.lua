-- Shared by every script that writes a partition's state (prepended to it): a worker whose
-- owner generation is no longer the partition's (it was paused past its session and the
-- partition moved) writes nothing. KEYS[1] is the partition's owner key, ARGV[1] its key
-- scheme, ARGV[2] the caller's generation.
local generation = ARGV[2]
do
  local owner = redis.call('GET', KEYS[1])
  if owner ~= generation then
    return redis.error_reply('FENCED partition owned by generation ' .. (owner or 'none'))
  end
end
