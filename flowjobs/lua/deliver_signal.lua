-- FlowClient.signal: keep the payload once; if a step is parked waiting for it, say which job resumes it.
-- Returns {'resume', step_key, attempt, job_id}, {'kept'}, or a refusal: no_run, not_active, unknown,
-- already.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', a.run_key, 'status')
if not status then return {'no_run'} end
local raw = redis.call('HGET', a.signals_key, a.name)
local record = raw and cjson.decode(raw) or nil
if record and record.delivered_at then return {'already', record.delivered_at} end
if status ~= 'Running' and status ~= 'Pending' then return {'not_active', status} end
if not a.declared then return {'unknown'} end
record = record or {run_id = a.run_id, signal_name = a.name, created_at = a.now}
record.delivered_at = a.now
record.payload_json = a.payload_json
redis.call('HSET', a.signals_key, a.name, cjson.encode(record))
if record.step_key then
  local step = redis.call('HMGET', a.step_prefix .. record.step_key, 'status', 'attempt', 'job_id')
  if step[1] == 'Pending' then return {'resume', record.step_key, step[2], step[3]} end
end
return {'kept'}
