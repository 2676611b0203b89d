-- rate_reset: forget a rate limiter's state and start a new reset epoch,
-- so that servers holding lax reservations of the limiter drop them at
-- their next reservation (lua/rate_reserve.lua returns the epoch).
-- KEYS[1] limiter key, KEYS[2] its epoch (same hash tag).
-- The epoch lives a day after the last reset; when it expires it reads as
-- 0, which a server holding an older epoch also takes as a reset (harmless:
-- it drops units it could have spent).
-- Returns 1 if the limiter had a state, else 0.
local had = redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
return had
