-- Shared helpers, prepended to every flowjobs script. Keys arrive inside the JSON argument,
-- computed by flowjobs/keys.py; scripts never spell a key themselves.
local FINAL = {Succeeded = true, Failed = true, Skipped = true}

local function push_event(events_key, run_id, now, kind, step_key, message)
  local event = {sequence = redis.call('LLEN', events_key) + 1, run_id = run_id, timestamp = now, type = kind}
  if step_key then event.step_key = step_key end
  if message then event.message = message end
  redis.call('RPUSH', events_key, cjson.encode(event))
end

local function hset_present(key, fields)
  -- fields: array of {name, value}; a nil value is skipped.
  local args = {}
  for _, pair in ipairs(fields) do
    if pair[2] ~= nil and pair[2] ~= cjson.null then
      args[#args + 1] = pair[1]
      args[#args + 1] = tostring(pair[2])
    end
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

local function move_run_status(a, to_status)
  -- a: {run_key, run_id, status_keys}; keeps the per-status index in step with the run hash.
  local from_status = redis.call('HGET', a.run_key, 'status')
  local score = redis.call('HGET', a.run_key, 'started_score')
  redis.call('ZREM', a.status_keys[from_status], a.run_id)
  redis.call('ZADD', a.status_keys[to_status], score, a.run_id)
  redis.call('HSET', a.run_key, 'status', to_status)
end

local function ok(value) if value == nil or value == cjson.null then return nil end return value end
