-- Shared helpers, prepended to every flowjobs script (flowjobs/store/scripts.py). Each script
-- takes one JSON document, ARGV[1], read by script_args(); every key it touches is in KEYS: the
-- document's key fields (`*_key`, `*_keys`: KEY_FIELDS in flowjobs/store/scripts.py) name them,
-- computed by flowjobs/core/keys.py, so scripts never spell or build a key. Scripts that enqueue
-- jobs also take RQ's enqueue commands as binary-safe ARGV[2..] slices (see run_commands). A
-- "hash" in a reply is HGETALL's flat {field, value, ...} list. Field groups the script headers
-- refer to:
--   run fields (StoreContext.run_args): run_id, run_key, events_key, steps_key, events_channel,
--     quiet (true: this process read lately that no live view listens; see push_event), deadlines_key, now (ISO time: run hash and signal records), now_ms (the same time in epoch
--     ms: step records, attempts and events), max_events (events kept per run), metrics_key (the
--     metric counters, see below); and, from StoreContext.flow_args, flow_label (the metric label:
--     flow name, else id) and, for scripts that may move the run's status, status_keys
--     {RunStatus: index key} and flow_status_keys {RunStatus: the run's flow's index key}.
--   step fields (RunWrites._step_args): the run fields, and step_key, attempt, member
--     (`<run_id>:<step_key>`), steps_key, leases_key, pending_key, attempts_key, loops_key.
--   step records: fields of the run's steps hash (steps_key): `<step key>` is the status, and
--     `<step key>|<code>` each other record field (STEP_FIELD, flowjobs/store/codec.py); a job id
--     is stored only when it is not the attempt's plain one (STEP_JOB_ID).
--   continuation (RunWrites._continuation_args, read by apply_continuation): the run fields (all
--     of flow_args), and
--     steps_key, jobs_key, pending_key, skip [{step_key, step_type, reason, trace}],
--     dispatch [{step_key, step_type, attempt, job_id, member, due_ms, commands}],
--     optional close {status, required: step keys that must be final}, optional version,
--     loops [{key, started, finals: {{index, outcome}...}}] (ForEach counters to advance).
--   scope (read_state): null for the whole run, or {keys: step keys whose statuses to read,
--     loop: null or {key, outcome_field: `<loop>.<index>.outcome` or null}}; with loops_key,
--     loop_items_key, steps_key, run_key.
--   state (read_state's reply): {step statuses hash, run hash (without trigger_data_json unless
--     asked), loops hash (`<loop>` count, `<loop>.started`, `<loop>.done`), iteration final: 1/0}.
-- Each script's reply is decoded by decode_<script name> in flowjobs/store/scripts.py.
-- Statuses, transitions and reasons (FINAL, ACTIVE, RUN, STEP, REASON) come from the prelude that
-- flowjobs/store/scripts.py generates from flowjobs/core/transitions.py and puts before this file:
-- a fence tests the rule its script performs (STEP.claim.from[status]) instead of spelling statuses.

-- Arguments per unpack(): Lua's C stack holds 8000 (LUAI_MAXCSTACK), and a ForEach of thousands of
-- items makes longer field lists than that. Even, so field-value pairs stay together.
local UNPACK_MAX = 4000

local function hset_flat(key, list)
  -- HSET of a flat {field, value...} list, in as many calls as unpack() needs (one, mostly).
  for i = 1, #list, UNPACK_MAX do
    redis.call('HSET', key, unpack(list, i, math.min(i + UNPACK_MAX - 1, #list)))
  end
end

local function hmget_all(key, fields)
  -- HMGET of any number of fields (false where absent), in as many calls as unpack() needs.
  if #fields <= UNPACK_MAX then return redis.call('HMGET', key, unpack(fields)) end
  local values = {}
  for i = 1, #fields, UNPACK_MAX do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + UNPACK_MAX - 1, #fields)))
    for j = 1, #part do values[#values + 1] = part[j] end
  end
  return values
end

-- Per run this call (events_key -> value), from its steps hash, read once (note_events_trimmed when
-- the caller read them with the records): events trimmed from the head of its events list
-- (EVENTS_TRIMMED, a count), and whether it started while a live view listened (LISTENED).
local TRIMMED_SO_FAR = {}
local LISTENED_RUN = {}

local function note_events_trimmed(a, value, listened)
  TRIMMED_SO_FAR[a.events_key] = tonumber(value or '0') or 0
  LISTENED_RUN[a.events_key] = listened == '1'
end

local function note_listeners(a)
  -- A run's start (start_run.lua): while a live view listens (a.listeners_key, Keys.listeners, is
  -- set), the run is marked LISTENED, so each of its events is published whatever a worker's view.
  if redis.call('EXISTS', a.listeners_key) == 1 then
    redis.call('HSET', a.steps_key, LISTENED, '1')
    LISTENED_RUN[a.events_key] = true
  end
end

local function event_sequence(raw, previous)
  -- An entry's sequence: written in it (entries before this encoding: `<sequence>|...` or JSON), else
  -- the previous entry's + 1 (flowjobs/store/codec.py, decode_events, reads them the same way).
  local written = string.match(raw, '^(%d+)|') or string.match(raw, '^{.-"sequence": *(%d+)')
  return tonumber(written or '') or previous + 1
end

local function push_event(a, kind, step_key, message)
  -- a: the run fields. Appends `|<now_ms>|<type code>|<step key>[|<message>]` (keys.py, Keys.events;
  -- EVENT_CODE; `%` and `|` of the step key percent-encoded) and keeps the last max_events entries.
  -- The sequence is not written: it is the entry's position after the steps hash's EVENTS_TRIMMED
  -- (entries dropped from the head so far), so no read of the list is needed to append.
  local key = step_key and (step_key:gsub('%%', '%%25'):gsub('|', '%%7C')) or ''
  local ms = string.format('%d', a.now_ms)
  local tail = '|' .. key
  if message then tail = tail .. '|' .. message end
  local length = redis.call('RPUSH', a.events_key, '|' .. ms .. '|' .. (EVENT_CODE[kind] or kind) .. tail)
  local trimmed = TRIMMED_SO_FAR[a.events_key]
  if trimmed == nil then
    note_events_trimmed(a, unpack(redis.call('HMGET', a.steps_key, EVENTS_TRIMMED, LISTENED)))
    trimmed = TRIMMED_SO_FAR[a.events_key]
  end
  if length > a.max_events then
    local excess = length - a.max_events
    for _, raw in ipairs(redis.call('LRANGE', a.events_key, 0, excess - 1)) do
      trimmed = event_sequence(raw, trimmed)
    end
    redis.call('LTRIM', a.events_key, excess, -1)
    redis.call('HSET', a.steps_key, EVENTS_TRIMMED, trimmed)
    TRIMMED_SO_FAR[a.events_key] = trimmed
    length = a.max_events
  end
  -- Live views (the flows UI's server-sent events) follow runs here: `<run_id>|<sequence>|...`, with
  -- the event's type spelled out (only the stored entry is coded). Published unless the caller's
  -- fresh view says no one listens (a.quiet: StoreContext.run_args) and the run started unheard.
  if not a.quiet or LISTENED_RUN[a.events_key] then
    redis.call('PUBLISH', a.events_channel, a.run_id .. '|' .. (trimmed + length) .. '|' .. ms .. '|' .. kind .. tail)
  end
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
  hset_flat(key, args)
end

local function step_field(step_key, name)
  -- The steps hash field of a step's record field `name` (see "step records" above).
  if name == 'status' then return step_key end
  return step_key .. STEP_FIELD_SEPARATOR .. STEP_FIELD[name]
end

local function step_fields(step_key, names, into)
  -- The steps hash fields of a step's record fields `names`, appended to `into` (default: a new list).
  into = into or {}
  for _, name in ipairs(names) do into[#into + 1] = step_field(step_key, name) end
  return into
end

local function step_get(a, step_key, ...)
  -- HMGET of a step's record fields by name, from a.steps_key.
  return redis.call('HMGET', a.steps_key, unpack(step_fields(step_key, {...})))
end

local function step_set(a, step_key, fields)
  -- fields: array of {name, value}; a nil value is skipped (as hset_present).
  local named = {}
  for i, pair in ipairs(fields) do named[i] = {step_field(step_key, pair[1]), pair[2]} end
  hset_present(a.steps_key, named)
end

local function step_del(a, step_key, ...)
  redis.call('HDEL', a.steps_key, unpack(step_fields(step_key, {...})))
end

local function step_clear(a, step_key)
  -- Every record field of the step but its status.
  local fields = {}
  for _, code in pairs(STEP_FIELD) do fields[#fields + 1] = step_key .. STEP_FIELD_SEPARATOR .. code end
  redis.call('HDEL', a.steps_key, unpack(fields))
end

local function plain_job_id(a, step_key, attempt)
  return STEP_JOB_ID[1] .. a.run_id .. STEP_JOB_ID[2] .. step_key .. STEP_JOB_ID[3] .. attempt
end

local UUID_PATTERN = '^' .. string.rep('%x', 8) .. ('%-' .. string.rep('%x', 4)):rep(3) .. '%-' .. string.rep('%x', 12) .. '$'

local function index_job(a, job_id)
  -- The reverse job index (a.jobs_key, Keys.jobs) holds only job ids the run cannot be read from:
  -- `<STEP_JOB_ID[1]><run id, a UUID><STEP_JOB_ID[2]>...` names its run (core/job_calls.py, run_of_job).
  local plain = STEP_JOB_ID[1] .. a.run_id .. STEP_JOB_ID[2]
  if job_id:sub(1, #plain) ~= plain or not a.run_id:match(UUID_PATTERN) then
    redis.call('HSET', a.jobs_key, job_id, a.run_id)
  end
end

local function set_job(a, step_key, attempt, job_id)
  -- Records the attempt's job id, unless it is the plain one (read back by job_of).
  if job_id == plain_job_id(a, step_key, attempt) then
    step_del(a, step_key, 'job_id')
  else
    step_set(a, step_key, {{'job_id', job_id}})
  end
end

local function job_of(a, step_key, attempt, stored)
  -- The job id of a step's attempt: `stored` (its record's job_id field), else the plain one.
  if stored then return stored end
  if attempt then return plain_job_id(a, step_key, attempt) end
  return nil
end

local function step_statuses(a)
  -- {step key, status, ...} of every step of the run: the steps hash without the record fields;
  -- the plan version it holds (STEPS_VERSION), or nil; and its EVENTS_TRIMMED, or nil.
  local all = redis.call('HGETALL', a.steps_key)
  local statuses, version, trimmed = {}, nil, nil
  for i = 1, #all, 2 do
    if not string.find(all[i], STEP_FIELD_SEPARATOR, 1, true) then
      statuses[#statuses + 1] = all[i]
      statuses[#statuses + 1] = all[i + 1]
    elseif all[i] == STEPS_VERSION then
      version = all[i + 1]
    elseif all[i] == EVENTS_TRIMMED then
      trimmed = all[i + 1]
    end
  end
  return statuses, version, trimmed
end

local function move_run_status(a, to_status, run, also)
  -- a: {run_key, run_id, status_keys, flow_status_keys}; keeps the per-status and the
  -- per-flow-per-status indexes in step with the run hash. run (optional): {status, started_score}
  -- as the caller read them in this call (nil: read now); also (optional): a flat {field, value...}
  -- list of run hash fields written with the status.
  run = run or redis.call('HMGET', a.run_key, 'status', 'started_score')
  local from_status, score = run[1], run[2]
  redis.call('ZREM', a.status_keys[from_status], a.run_id)
  redis.call('ZADD', a.status_keys[to_status], score, a.run_id)
  redis.call('ZREM', a.flow_status_keys[from_status], a.run_id)
  redis.call('ZADD', a.flow_status_keys[to_status], score, a.run_id)
  redis.call('HSET', a.run_key, 'status', to_status, unpack(also or {}))
end

local function fenced_out(step, rule, attempt)
  -- The fencing check: `step` ({status, attempt, ...} from HMGET) must be in a status `rule` (STEP.*)
  -- leaves, at exactly `attempt`; otherwise the reply that refuses a stale job.
  if not rule.from[step[1]] or tonumber(step[2]) ~= attempt then
    return {'stale', (step[1] or 'missing') .. '#' .. (step[2] or '?')}
  end
end

local function ok(value) if value == nil or value == cjson.null then return nil end return value end

-- The plan version: counts changes that can alter a plan (new records, final statuses), so
-- continuations planned from an older snapshot are not applied (see complete.lua). It is the steps
-- hash's STEPS_VERSION field (written with the step writes that raise it); a run from before it
-- holds it as the run hash's steps_version, read where the field is absent.
local function version_of(in_steps, in_run)
  return tonumber(in_steps or in_run or '0')
end

local function read_version(a)
  local in_steps = redis.call('HGET', a.steps_key, STEPS_VERSION)
  return version_of(in_steps, not in_steps and redis.call('HGET', a.run_key, 'steps_version'))
end

-- Whether this call raised the version already: once per call is enough, since a plan is compared
-- with it only between calls (a script is atomic).
local VERSION_BUMPED = false

local function bump_version(a, current, writes)
  -- current: the version as this call read it (nil: read now); writes: a flat {field, value...}
  -- list the caller writes to a.steps_key later (nil: written now).
  if VERSION_BUMPED then return end
  VERSION_BUMPED = true
  local pair = {STEPS_VERSION, (current or read_version(a)) + 1}
  if writes then
    writes[#writes + 1] = pair[1]
    writes[#writes + 1] = pair[2]
  else
    redis.call('HSET', a.steps_key, unpack(pair))
  end
end

local function run_commands(commands)
  -- RQ's enqueue commands for a job, built in Python (flowjobs/runtime/rq.py), passed as
  -- {at = binary-safe ARGV slices {offset, count}, command_keys = the keys they touch (in KEYS)}.
  if not commands then return end
  for _, c in ipairs(commands.at) do redis.call(unpack(ARGV, c[1], c[1] + c[2] - 1)) end
end

local function run_hash(a, with_trigger)
  -- The run hash as a flat list, without the trigger data unless asked (it can be megabytes; an
  -- HMGET of the other fields, RUN_FIELDS, never copies it).
  if with_trigger then return redis.call('HGETALL', a.run_key) end
  local values = redis.call('HMGET', a.run_key, unpack(RUN_FIELDS))
  local run = {}
  for i, name in ipairs(RUN_FIELDS) do
    if values[i] then
      run[#run + 1] = name
      run[#run + 1] = values[i]
    end
  end
  return run
end

local function run_field(run, name)
  -- One field of a flat run hash (run_hash), or nil.
  for i = 1, #run, 2 do
    if run[i] == name then return run[i + 1] end
  end
  return nil
end

local function put_run_field(run, name, value)
  -- Sets one field of a flat run hash (run_hash), as the caller wrote it to the run hash.
  for i = 1, #run, 2 do
    if run[i] == name then run[i + 1] = value return end
  end
  run[#run + 1] = name
  run[#run + 1] = value
end

local function read_state(a, scope, with_trigger, known)
  -- What the planner needs, read atomically with the transition that precedes it: every step and
  -- loop (scope null), or the scope's steps and its one loop's counters, so planning one ForEach
  -- iteration costs the same whatever the loop's size. Reply: see "state" above. `known` (optional):
  -- what the caller read already, as it is now: {run = run_hash's list, scope_values = the
  -- statuses of scope.keys, in order (or, scope null, statuses = step_statuses' list), version =
  -- the steps hash's STEPS_VERSION with them}.
  local statuses, loops, final, version = {}, {}, 0, nil
  known = known or {}
  scope = ok(scope)
  if not scope then
    statuses, version = known.statuses, known.version
    if not statuses then statuses, version = step_statuses(a) end
    -- ForEach counters exist only for an expanded ForEach step, which has a status: a run without
    -- step records (one starting) has none to read.
    if #statuses > 0 then loops = redis.call('HGETALL', a.loops_key) end
  else
    local values = known.scope_values
    if not values then
      local fields = {}
      for i, key in ipairs(scope.keys) do fields[i] = key end
      fields[#fields + 1] = STEPS_VERSION
      values = hmget_all(a.steps_key, fields)
      known.version = values[#fields]
    end
    version = known.version
    for i, key in ipairs(scope.keys) do
      if values[i] then
        statuses[#statuses + 1] = key
        statuses[#statuses + 1] = values[i]
      end
    end
    local loop = ok(scope.loop)
    if loop then
      local names = {loop.key, loop.key .. '.started', loop.key .. '.done'}
      local values = redis.call('HMGET', a.loops_key, unpack(names))
      for i, name in ipairs(names) do
        if values[i] then
          loops[#loops + 1] = name
          loops[#loops + 1] = values[i]
        end
      end
      if ok(loop.outcome_field) then final = redis.call('HEXISTS', a.loop_items_key, loop.outcome_field) end
    end
  end
  local run = known.run or run_hash(a, with_trigger)
  -- The snapshot's version (RunSnapshot.version), where the run hash kept it before.
  if version then put_run_field(run, 'steps_version', version) end
  return {statuses, run, loops, final}
end

local function advance_loops(a)
  -- ForEach counters: record each iteration's outcome once (counting it in `<loop>.done`) and
  -- raise `<loop>.started`. Returns true if anything changed.
  local changed = false
  for _, l in ipairs(a.loops or {}) do
    for _, f in ipairs(l.finals) do
      if redis.call('HSETNX', a.loop_items_key, l.key .. '.' .. f[1] .. '.outcome', f[2]) == 1 then
        redis.call('HINCRBY', a.loops_key, l.key .. '.done', 1)
        changed = true
      end
    end
    if tonumber(redis.call('HGET', a.loops_key, l.key .. '.started') or '0') < l.started then
      redis.call('HSET', a.loops_key, l.key .. '.started', l.started)
      changed = true
    end
  end
  return changed
end

-- Metrics (flowjobs/core/metrics.py: names, labels, buckets; METRIC_BUCKETS and METRIC_SEPARATOR
-- are prepended from there). Counted by the transition itself, in a.metrics_key.
local function count_metric(a, family, ...)
  redis.call('HINCRBY', a.metrics_key, table.concat({family, ...}, METRIC_SEPARATOR), 1)
end

local function metric_bucket(ms)
  -- The 1-based index of the first histogram bucket that holds `ms` (past the last: +Inf).
  local i = 1
  while METRIC_BUCKETS[i] and ms > METRIC_BUCKETS[i] do i = i + 1 end
  return i
end

local function observe_metric(a, family, ms, ...)
  -- One histogram observation of `ms` milliseconds: +1 in the first bucket that holds it (Python
  -- cumulates), and the whole milliseconds to the sum (an integer: HINCRBY; Python shows seconds).
  local series = table.concat({family, ...}, METRIC_SEPARATOR) .. METRIC_SEPARATOR
  redis.call('HINCRBY', a.metrics_key, series .. metric_bucket(ms), 1)
  redis.call('HINCRBY', a.metrics_key, series .. 'sum_ms', math.floor(ms + 0.5))
end

local function count_run_closed(a, status, started_score)
  -- a.flow_label: the flow's name (bounded, readable), else its id; passed by the caller.
  -- started_score: the run hash's, as the caller read it.
  local started = tonumber(started_score or '')
  count_metric(a, 'runs_finished', a.flow_label, status)
  if started then
    observe_metric(a, 'run_duration_seconds', math.max(0, a.now_ms - started * 1000), a.flow_label)
  end
end

local function count_attempt(a, outcome, started_ms, retried)
  -- The end of one attempt (complete.lua): a.timed_out and a.lease_expired_before_ms say why.
  local flow = a.flow_label
  -- A ForEach child's runtime key `<loop>.<index>.<child>` counts as `<loop>.<child>` (declared
  -- keys hold no '.'), so the label is bounded by the flow's steps, never by its items.
  local step = (a.step_key:gsub('%.%d+%.', '.'))
  if retried then count_metric(a, 'step_retries', flow, step) end
  if a.timed_out then count_metric(a, 'step_timeouts', flow, step) end
  if a.lease_expired_before_ms then count_metric(a, 'lease_expiries', flow, step) end
  started_ms = tonumber(started_ms or '')
  if not started_ms then return count_metric(a, 'step_attempts', flow, step, outcome) end
  -- The attempt and its duration's bucket in one field (METRIC_ATTEMPT_BUCKET); the sum apart.
  local ms = math.max(0, a.now_ms - started_ms)
  count_metric(a, METRIC_ATTEMPT_BUCKET, flow, step, outcome, metric_bucket(ms))
  redis.call('HINCRBY', a.metrics_key,
    table.concat({'step_duration_seconds', flow, 'sum_ms'}, METRIC_SEPARATOR), math.floor(ms + 0.5))
end

local function close_run(a, status, reason)
  -- Running/Pending -> a terminal status, once: the caller checked the run is still active. A
  -- reason (a run closed from outside its steps) follows the status in the event's message.
  local run = redis.call('HMGET', a.run_key, 'status', 'started_score')
  count_run_closed(a, status, run[2])
  move_run_status(a, status, run, {'completed_at', a.now})
  redis.call('ZREM', a.deadlines_key, a.run_id)
  push_event(a, 'run.completed', nil, reason and (status .. ': ' .. reason) or status)
end

local function skip_waiting(a, reason)
  -- Skip every step that waits without holding a worker: queued and parked steps, and expanded
  -- ForEach steps (Running, holding no worker). a: the run fields with steps_key, pending_key,
  -- loops_key. Returns {job ids of the skipped queued attempts}, and whether a step
  -- still runs on a worker.
  local jobs, running = {}, false
  local statuses = step_statuses(a)
  for i = 1, #statuses, 2 do
    local key, status = statuses[i], statuses[i + 1]
    local loop = status == 'Running' and redis.call('HEXISTS', a.loops_key, key) == 1
    if status == 'Pending' or loop then
      if status == 'Pending' then
        local step = step_get(a, key, 'attempt', 'job_id')
        jobs[#jobs + 1] = job_of(a, key, step[1], step[2])
      end
      step_set(a, key, {{'status', STEP.abandon.target}, {'error_message', reason}, {'completed_at', a.now_ms}})
      redis.call('ZREM', a.pending_key, a.run_id .. ':' .. key)  -- keys.step_member
      push_event(a, 'step.skipped', key, reason)
    elseif status == 'Running' then
      running = true
    end
  end
  bump_version(a)
  return jobs, running
end

local function apply_continuation(a, known)
  -- Dispatch ready steps, record skips, close the run when every step is final. A step that
  -- already has a status is never dispatched or skipped again (the dispatch ledger); a step
  -- without one has no record fields either (retry_step's reset clears them with the status).
  -- `known` (optional; complete.lua): what the caller read in this call, as it is now: {run_status,
  -- cancelled, statuses = {step key = its status or false, for every step of a.dispatch}, writes =
  -- a flat {field, value...} list for a.steps_key, written with the dispatched steps' records,
  -- version = the plan version}.
  -- Returns {dispatched step keys, closed status or false, run status}.
  known = known or {}
  local run_status = known.run_status
  if run_status == nil then run_status = redis.call('HGET', a.run_key, 'status') end
  local writes = known.writes or {}
  local function flush()
    hset_flat(a.steps_key, writes)
    writes = {}
  end
  local dispatched = {}
  local changed = false
  if not RUN.close.from[run_status] then
    flush()
    return {dispatched, false, run_status or false}
  end
  changed = advance_loops(a)
  local cancelled = known.cancelled
  if cancelled == nil then cancelled = redis.call('HGET', a.run_key, 'cancel_requested') == '1' end
  if cancelled then
    -- A cancelled run starts nothing more: what would be dispatched is skipped, and the run closes
    -- as Cancelled once every recorded step is final (steps never reached stay without a record).
    a.skip = a.skip or {}
    for _, d in ipairs(a.dispatch or {}) do
      a.skip[#a.skip + 1] = {step_key = d.step_key, step_type = d.step_type, reason = REASON.cancelled}
    end
    a.dispatch = {}
    a.close = {status = RUN.cancel.target, required = {}}
  end

  for _, s in ipairs(a.skip or {}) do
    if redis.call('HSETNX', a.steps_key, s.step_key, STEP.skip.target) == 1 then
      step_set(a, s.step_key, {
        {'step_type', s.step_type},
        {'error_message', ok(s.reason)}, {'evaluation_trace_json', ok(s.trace)}, {'completed_at', a.now_ms}})
      push_event(a, 'step.skipped', s.step_key, ok(s.reason))
      changed = true
    end
  end

  for _, d in ipairs(a.dispatch or {}) do
    local free
    if known.statuses then
      -- Read in this call, before any write of it: the ledger's check without a write of its own.
      free = not known.statuses[d.step_key]
      known.statuses[d.step_key] = STEP.dispatch.target
    else
      free = redis.call('HSETNX', a.steps_key, d.step_key, STEP.dispatch.target) == 1
    end
    if free then
      local fields = {{'status', STEP.dispatch.target}, {'step_type', d.step_type}, {'attempt', d.attempt},
        {'dispatched_at', a.now_ms}}
      if d.job_id ~= plain_job_id(a, d.step_key, d.attempt) then fields[#fields + 1] = {'job_id', d.job_id} end
      for _, pair in ipairs(fields) do
        writes[#writes + 1] = step_field(d.step_key, pair[1])
        writes[#writes + 1] = tostring(pair[2])
      end
      index_job(a, d.job_id)
      redis.call('ZADD', a.pending_key, d.due_ms, d.member)
      run_commands(d.commands)
      dispatched[#dispatched + 1] = d.step_key
    end
  end
  if #dispatched > 0 or changed then bump_version(a, known.version, writes) end
  flush()

  local closed = false
  if a.close then
    local statuses = step_statuses(a)
    local final, status_of = true, {}
    for i = 1, #statuses, 2 do
      if not FINAL[statuses[i + 1]] then final = false break end
      status_of[statuses[i]] = statuses[i + 1]
    end
    if final then
      for _, key in ipairs(a.close.required) do
        if not status_of[key] then final = false break end
      end
    end
    if final then
      close_run(a, a.close.status)
      closed = a.close.status
    end
  end
  return {dispatched, closed, closed or run_status}
end
