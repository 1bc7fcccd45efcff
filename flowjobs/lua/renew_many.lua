-- Extend the leases of running attempts in one call (a worker renews everything it holds at once).
-- ARGV[1] (JSON): leases_key, lease_until_ms, leases [{steps_key (its run's), step_key, member, attempt}].
-- Reply: per lease, in order: 1 renewed, or 0 when the attempt is no longer current (fenced out)
--   or holds no lease any more (a ForEach step released it when it expanded: it must not be
--   recovered as lost).
local a = script_args()
local renewed = {}
for i, l in ipairs(a.leases) do
  local step = step_get(l, l.step_key, 'status', 'attempt', 'lease_until_ms')
  if fenced_out(step, STEP.renew, l.attempt) or not step[3] then
    renewed[i] = 0
  else
    step_set(l, l.step_key, {{'lease_until_ms', a.lease_until_ms}})
    redis.call('ZADD', a.leases_key, a.lease_until_ms, l.member)
    renewed[i] = 1
  end
end
return renewed
