-- Marks the start of a handler run for entries that came back after a
-- restart or a reclaim, and returns how many runs each has had in this
-- round (this one included). A run whose mark is still there when the
-- entry comes back was cut off by a crash: it counts as an attempt.
--
-- KEYS[1]  the attempt marks {S}:attempts
-- ARGV[1]  consumer group
-- ARGV[2..] entry IDs
--
-- Returns one integer per ID: runs started and not settled, this one
-- included (1 when no earlier run was cut off).
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = redis.call('HINCRBY', KEYS[1], ARGV[1] .. '\0' .. ARGV[i], 1)
end
return out
