-- RQ's bookkeeping of the job that executes a step (flowjobs/runtime/rq.py, RQJobBooks), done by
-- the step's claim (the job's start) and by the completion that ends the step (the job's end)
-- instead of by RQ's worker in pipelines of its own: the keys and fields RQ 2's worker writes
-- (prepare_execution, prepare_job_execution, handle_job_success, handle_job_failure), so RQ,
-- rq-dashboard and Job.fetch see the job as RQ would have left it. `b` (nil or null: nothing to
-- do) carries its keys in b.books_keys (declared in KEYS, store/scripts.py): the job hash, its
-- execution hash, its executions registry, the queue's started registry, the worker hash, then the queue's
-- intermediate list (start), or the job's results stream and the finished or failed registry (end).
-- Times arrive formatted as RQ formats them (b.now: RQ's ISO form; b.ts: epoch seconds).
-- At the start, b.persist says the job hash may carry an expiry (FlowJob.may_expire), and
-- b.worker_busy that the worker hash is to be written busy with the job (RQJobBooks.write_worker),
-- and b.executions_ttl the executions set's expiry (none for a step job's: RQJobBooks.started).
-- The worker hash: its heartbeat and its TTL (unless the job needs a longer one, b.worker_ttl) come
-- with the worker's heartbeats; the job's end (the worker idle, its counters) is written here only
-- for a forking worker's work-horse (b.counter): a worker running jobs in its own process writes
-- it with its next heartbeat, or the next job's start overwrites it (WorkerTally).

local function rq_job_started(b)
  if b == nil or b == cjson.null then return end
  local job, execution, executions, started, worker, intermediate = unpack(b.books_keys, 1, 6)
  -- RQ's Job.perform clears the hash's expiry (a requeued job keeps its last end's): done here,
  -- the worker skipping it (FlowJob).
  if b.persist then redis.call('PERSIST', job) end
  redis.call('HSET', execution, 'id', b.execution_id, 'created_at', b.ts, 'last_heartbeat', b.ts,
    'worker_name', b.worker_name)
  redis.call('EXPIRE', execution, b.ttl)
  redis.call('ZADD', executions, b.expires + 60, b.execution_id)
  if b.executions_ttl then redis.call('EXPIRE', executions, b.executions_ttl) end
  redis.call('ZADD', started, b.expires, b.job_id .. ':' .. b.execution_id)
  if b.worker_busy then
    redis.call('HSET', worker, 'state', 'busy', 'current_job', b.job_id, 'current_job_working_time', 0,
      'last_heartbeat', b.now)
  end
  if b.worker_ttl then redis.call('EXPIRE', worker, b.worker_ttl) end
  redis.call('HSET', job, 'last_heartbeat', b.now, 'status', 'started', 'started_at', b.now,
    'worker_name', b.worker_name)
  redis.call('LREM', intermediate, 1, b.job_id)
end

local function rq_job_ended(b)
  if b == nil or b == cjson.null then return end
  local job, execution, executions, started, worker, results, registry = unpack(b.books_keys, 1, 7)
  redis.call('HSET', job, 'status', b.status, 'ended_at', b.now, 'last_heartbeat', b.now)
  redis.call('XADD', results, 'MAXLEN', '~', 10, '*', unpack(b.result))
  redis.call('ZADD', registry, b.score, b.job_id)
  if b.ttl > 0 then
    redis.call('EXPIRE', job, b.ttl)
    redis.call('EXPIRE', results, b.ttl)
  else
    redis.call('PERSIST', results)
  end
  redis.call('DEL', execution)
  redis.call('ZREM', started, b.job_id .. ':' .. b.execution_id)
  redis.call('ZREM', executions, b.execution_id)
  if b.counter then
    redis.call('HDEL', worker, 'current_job')
    redis.call('HSET', worker, 'state', 'idle')
    redis.call('HINCRBY', worker, b.counter, 1)
    redis.call('HINCRBYFLOAT', worker, 'total_working_time', b.working_time)
  end
end
