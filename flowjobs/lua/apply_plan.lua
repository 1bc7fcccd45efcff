-- Apply a continuation planned in Python from the step statuses (apply_continuation, common.lua).
-- ARGV[1] (JSON): a continuation (common.lua). ARGV[2..]: the dispatched steps' job commands.
-- Reply: {dispatched step keys, closed status or false, run status after or false (no run)};
--   a run that is not Running gets nothing written: {{}, false, its status or false}.
return apply_continuation(cjson.decode(ARGV[1]))
