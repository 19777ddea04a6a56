#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "kernels/thread_team.h"

using namespace mambavl::kernels;

// Every chunk of every phase runs exactly once, phases are ordered by the barriers (a phase sees
// everything the previous one wrote), whatever the team size (more threads than cores included)
// and across many runs (the counters are reused in turn).
TEST(ThreadTeam, ChunksRunOncePhasesAreOrderedAcrossRuns) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadTeam team(threads);
    EXPECT_EQ(team.size(), threads);
    const int64_t n = 97;
    std::vector<int64_t> a(n), b(n);
    for (int run = 0; run < 200; ++run) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> singles{0};
      team.run([&](ThreadTeam::Member& m) {
        for (int phase = 0; phase < 7; ++phase) {
          m.for_chunks(n, [&](int64_t i) {
            hits[i].fetch_add(1);
            a[i] = run * 100 + phase;
          });
          // The next phase reads what every member wrote in this one.
          m.for_chunks(n, [&](int64_t i) { b[i] = a[(i + 1) % n]; });
          m.single([&] { singles.fetch_add(1); });
        }
      });
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(hits[i].load(), 7) << threads << " threads, run " << run << ", chunk " << i;
        ASSERT_EQ(b[i], run * 100 + 6);
      }
      ASSERT_EQ(singles.load(), 7);
    }
  }
}

// A member that is slow (descheduled, or on a busy core) does not lose work or stall the others
// for ever: the other members take the chunks, the result is complete.
TEST(ThreadTeam, ASlowMemberLeavesItsChunksToTheOthers) {
  ThreadTeam team(3);
  const int64_t n = 60;
  std::vector<std::atomic<int>> by(3);
  std::vector<std::atomic<int>> hits(n);
  team.run([&](ThreadTeam::Member& m) {
    if (m.id() == 2) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    m.for_chunks(n, [&](int64_t i) {
      hits[i].fetch_add(1);
      by[m.id()].fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    });
  });
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1);
  EXPECT_EQ(by[0] + by[1] + by[2], n);
  EXPECT_LT(by[2].load(), n / 3);  // it arrived late: the others had taken most chunks
}

TEST(ThreadTeam, DecodeTeamFollowsTheThreadSetting) {
  DecodeTeamLease a = decode_team();
  EXPECT_GE(a.team->size(), 1);
}
