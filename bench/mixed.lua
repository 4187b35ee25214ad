-- wrk script for the "mixed" scenario (bench/run.py): every 20th request of a
-- thread goes to /slow.php (usleep 50 ms, standing in for a database query), the
-- other 19 to /fast.php. A counter per thread (each wrk thread has its own Lua
-- state), so the mix is exactly 5 % and the same on every run.
local fast, slow
local n = 0

function init(args)
   fast = wrk.format(nil, "/fast.php")
   slow = wrk.format(nil, "/slow.php")
end

function request()
   n = n + 1
   if n % 20 == 0 then
      return slow
   end
   return fast
end
