-- Retention: delete a batch of finished runs with every key of theirs (flowjobs/store/retention.py).
-- Stands alone (common.lua is not prepended; script_args is) and spells no key: every name comes
-- from keys.py and the job runner, computed in Python, and is in KEYS.
-- ARGV[1] (JSON): terminal (run statuses a run may be purged in), jobs_key, leases_key,
--   pending_key, registry_keys (sorted sets that can list a job id), and runs [{id, run_key,
--   status and completed_at (as read before: a run re-opened or closed again since is left
--   alone), run_keys (keys to unlink), job_keys (its jobs' keys, to unlink), index_keys (sorted
--   sets listing the run id: those of its status, its source's re-run index),
--   members (`<run_id>:<step_key>` of the leases and pending sets), job_ids, idempotency_key (or
--   null: deleted only while it names this run)}].
-- Reply: the ids of the runs deleted. A run that is not in the terminal status read before (a
-- retried step re-opened it) or whose completed_at changed is skipped: active runs are never
-- deleted. So is a run with a job a worker still runs (a job hash whose status is RQ's `started`:
-- a step that outlived its run's deadline or cancel), as RQ would write the job's keys again when
-- it ends; a later purge takes the run once its jobs ended.
local a = script_args()
local CHUNK = 500  -- unpack() stays far below Lua's C stack limit

local function each_chunk(list, fn)
  for i = 1, #list, CHUNK do fn(unpack(list, i, math.min(i + CHUNK - 1, #list))) end
end

local terminal = {}
for _, status in ipairs(a.terminal) do terminal[status] = true end

local function job_started(keys)
  -- pcall: a job owns keys of other types (results stream, registries) that HGET refuses.
  for _, key in ipairs(keys) do
    if redis.pcall('HGET', key, 'status') == 'started' then return true end
  end
  return false
end

local purged = {}
for _, r in ipairs(a.runs) do
  local run = redis.call('HMGET', r.run_key, 'status', 'completed_at')
  if run[1] == r.status and terminal[run[1]] and run[2] == r.completed_at and not job_started(r.job_keys) then
    each_chunk(r.run_keys, function(...) redis.call('UNLINK', ...) end)
    each_chunk(r.job_keys, function(...) redis.call('UNLINK', ...) end)
    for _, index in ipairs(r.index_keys) do redis.call('ZREM', index, r.id) end
    each_chunk(r.members, function(...)
      redis.call('ZREM', a.leases_key, ...)
      redis.call('ZREM', a.pending_key, ...)
    end)
    each_chunk(r.job_ids, function(...)
      redis.call('HDEL', a.jobs_key, ...)
      for _, registry in ipairs(a.registry_keys) do redis.call('ZREM', registry, ...) end
    end)
    if r.idempotency_key ~= cjson.null and redis.call('GET', r.idempotency_key) == r.id then
      redis.call('DEL', r.idempotency_key)
    end
    purged[#purged + 1] = r.id
  end
end
return purged
