-- 010 one running experiment at a time.
-- Every running experiment changes the same thing (how a user's list is made), so two at once
-- would either overlap (a user in both: effects confounded) or have to split users between
-- them (starting the second would move users out of the first mid-test). Serving assigns users
-- within the single running experiment (serving/experiments/running.py); this index makes the
-- rule hold for every writer. Layered (orthogonal) experiments are future work.
CREATE UNIQUE INDEX experiments_one_running ON experiments ((true)) WHERE status = 'running';
