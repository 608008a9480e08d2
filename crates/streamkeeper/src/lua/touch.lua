-- Keeps the entries a live consumer holds (read ahead or running) fresh,
-- so that no peer's XAUTOCLAIM takes them: XCLAIM … 0 … JUSTID resets an
-- entry's idle time without counting a delivery. Only entries this
-- consumer still owns are touched; one a peer took over (this process was
-- frozen for longer than claim_after) is reported instead of taken back.
--
-- The same script hands read-ahead back on a graceful stop: with ARGV[3]
-- = claim_after in ms, the entries look idle that long, so a peer's next
-- XAUTOCLAIM takes them at once instead of claim_after later.
--
-- KEYS[1]  the stream S
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3]  idle time to set, ms (0: fresh)
-- ARGV[4..] entry IDs the consumer holds
--
-- Returns the IDs that are no longer pending for this consumer.
local owned = {}
local lost = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    owned[#owned + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
local i = 1
while i <= #owned do
  local last = math.min(i + 499, #owned)
  local args = {KEYS[1], ARGV[1], ARGV[2], 0}
  for j = i, last do
    args[#args + 1] = owned[j]
  end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = ARGV[3]
  args[#args + 1] = 'JUSTID'
  redis.call('XCLAIM', unpack(args))
  i = last + 1
end
return lost
