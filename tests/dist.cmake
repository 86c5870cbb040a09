# Distributed runtime: planner and wire protocol (module dist, built when src/dist exists).
if(TARGET braid_dist)
  braid_test(test_planner braid_dist)
  braid_test(test_protocol braid_dist)
endif()
