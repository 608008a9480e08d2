-- Claims due ticks of many schedules and emits them, each schedule
-- atomically: only the instance whose expected due time still matches
-- moves the due time forward, and the same script appends the ticks.
-- A tick is therefore emitted once, by one instance, or not yet.
--
-- KEYS[1]  {N}:due    zset name -> next due ms
-- KEYS[2]  {N}:state  hash name -> "<last due ms> <fired at ms>"
-- KEYS[3]  {N}:outbox hash "<name> <due>" -> JSON array of the tick's fields
-- KEYS[4..] target streams
-- ARGV[1]  now, in ms
-- ARGV[2]  number of items, then per item:
--          name, expected due, next due, target index (into KEYS; 0 =
--          two-step: the target is in another hash slot), n ticks,
--          tick due × n, n field pairs, field, value × n
--
-- Two-step items do not append here: their ticks go to the outbox, and
-- the client appends each with a dedupe key in the target's slot, then
-- removes it from the outbox. Any instance re-emits stale outbox entries,
-- and the dedupe key makes that safe.
--
-- A target key that exists and is not a stream would make XADD fail
-- after the due time moved (a lost tick) and abort the whole batch: its
-- TYPE is checked first, and such an item is skipped untouched.
--
-- Returns {ticks emitted or queued, schedules claimed, outbox fields
-- "<name> <due>" this call queued (the caller's second step), skipped
-- items as name, target type, name, target type, …, the 0-based
-- positions of the items claimed (the caller's per-schedule metrics)}.
local i = 3
local emitted = 0
local claimed = 0
local queued = {}
local skipped = {}
local claimed_items = {}
for k = 1, tonumber(ARGV[2]) do
  local name = ARGV[i]
  local expected = tonumber(ARGV[i + 1])
  local next_due = ARGV[i + 2]
  local target_index = tonumber(ARGV[i + 3])
  local n_ticks = tonumber(ARGV[i + 4])
  local ticks_at = i + 5
  local n_pairs = tonumber(ARGV[ticks_at + n_ticks])
  local fields_at = ticks_at + n_ticks + 1
  i = fields_at + 2 * n_pairs
  local current = redis.call('ZSCORE', KEYS[1], name)
  local target_type = 'stream'
  if target_index > 0 then
    target_type = redis.call('TYPE', KEYS[target_index])['ok']
  end
  if target_type ~= 'stream' and target_type ~= 'none' then
    skipped[#skipped + 1] = name
    skipped[#skipped + 1] = target_type
  elseif current and tonumber(current) == expected then
    redis.call('ZADD', KEYS[1], next_due, name)
    claimed = claimed + 1
    claimed_items[#claimed_items + 1] = k - 1
    for t = 0, n_ticks - 1 do
      local args = {}
      for f = 0, 2 * n_pairs - 1 do
        args[#args + 1] = ARGV[fields_at + f]
      end
      args[#args + 1] = 'sk-schedule'
      args[#args + 1] = name
      args[#args + 1] = 'sk-due'
      args[#args + 1] = ARGV[ticks_at + t]
      if target_index == 0 then
        local field = name .. ' ' .. ARGV[ticks_at + t]
        redis.call('HSET', KEYS[3], field, cjson.encode(args))
        queued[#queued + 1] = field
      else
        redis.call('XADD', KEYS[target_index], '*', unpack(args))
      end
      emitted = emitted + 1
    end
    if n_ticks > 0 then
      redis.call('HSET', KEYS[2], name, ARGV[ticks_at + n_ticks - 1] .. ' ' .. ARGV[1])
    end
  end
end
return {emitted, claimed, queued, skipped, claimed_items}
