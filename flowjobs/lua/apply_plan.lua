-- Continuation planned in Python from the step statuses: see apply_continuation in common.lua.
return apply_continuation(cjson.decode(ARGV[1]))
