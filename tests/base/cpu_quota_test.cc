#include "base/cpu_quota.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace orrery {
namespace {

namespace fs = std::filesystem;

// This machine's kind of mountinfo (a hybrid: v1 controllers, v2 without them), with an optional
// field and an escaped space added.
constexpr char kHybridMountinfo[] =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n"
    "garbage line\n";

TEST(CgroupMountsTest, FindsTheCpuControllerAndTheUnifiedHierarchyOnly) {
  const std::vector<CgroupMount> mounts = CpuCgroupMounts(kHybridMountinfo);
  ASSERT_EQ(mounts.size(), 2u);
  EXPECT_EQ(mounts[0].mount_point, "/sys/fs/cgroup/cpu");  // not cpuacct or cpuset
  EXPECT_EQ(mounts[0].root, "/");
  EXPECT_FALSE(mounts[0].v2);
  EXPECT_EQ(mounts[1].mount_point, "/sys/fs/cgroup/uni fied");
  EXPECT_TRUE(mounts[1].v2);
  // cpu and cpuacct mounted together, as Debian's systemd does on v1.
  const std::vector<CgroupMount> joint = CpuCgroupMounts(
      "25 20 0:22 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n");
  ASSERT_EQ(joint.size(), 1u);
  EXPECT_EQ(joint[0].root, "/docker/abc");
}

TEST(CgroupMountsTest, ReadsTheProcessCgroupOfEachVersion) {
  const char* text = "9:name=systemd:/\n4:cpu,cpuacct:/slurm/job7\n3:cpuset:/x\n0::/user.slice/a\n";
  EXPECT_EQ(CgroupPathOf(text, false).value(), "/slurm/job7");
  EXPECT_EQ(CgroupPathOf(text, true).value(), "/user.slice/a");
  EXPECT_FALSE(CgroupPathOf("3:cpuset:/x\n", false).has_value());  // cpuset is not cpu
  EXPECT_FALSE(CgroupPathOf("0::/\n", false).has_value());
  EXPECT_FALSE(CgroupPathOf("junk\n", true).has_value());
}

TEST(CgroupMountsTest, PlacesACgroupUnderItsMount) {
  const CgroupMount host{"/", "/sys/fs/cgroup/cpu", false};
  EXPECT_EQ(CgroupDirectory(host, "/"), "/sys/fs/cgroup/cpu");
  EXPECT_EQ(CgroupDirectory(host, "/a/b"), "/sys/fs/cgroup/cpu/a/b");
  const CgroupMount container{"/docker/abc", "/sys/fs/cgroup/cpu", false};
  EXPECT_EQ(CgroupDirectory(container, "/docker/abc"), "/sys/fs/cgroup/cpu");
  EXPECT_EQ(CgroupDirectory(container, "/docker/abc/x"), "/sys/fs/cgroup/cpu/x");
  EXPECT_EQ(CgroupDirectory(container, "/docker/abcd"), "/sys/fs/cgroup/cpu");  // not under /docker/abc
  EXPECT_EQ(CgroupDirectory(container, "/other"), "/sys/fs/cgroup/cpu");
}

TEST(CpuQuotaTest, ParsesBothVersionsAndRejectsOtherText) {
  EXPECT_FALSE(ParseCpuMax("max 100000\n").value().has_value());
  EXPECT_DOUBLE_EQ(ParseCpuMax("150000 100000\n").value().value(), 1.5);
  EXPECT_FALSE(ParseCfsQuota("-1\n", "100000\n").value().has_value());
  EXPECT_DOUBLE_EQ(ParseCfsQuota("50000\n", "100000\n").value().value(), 0.5);
  for (const char* bad : {"", "max", "0 100000", "-5 100000", "100000 0", "x 100000", "1 2 3"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseCpuMax(bad).status())) << bad;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(ParseCfsQuota("0", "100000").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseCfsQuota("-2", "100000").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseCfsQuota("50000", "0").status()));
}

// A directory laid out like / for CgroupCpuLimit(root): proc/self/{mountinfo,cgroup} and the
// cgroup files under the mount points.
class FakeRoot {
 public:
  FakeRoot() {
    root_ = fs::path(::testing::TempDir()) / ("cpu_quota_" + std::to_string(::getpid()) + "_" +
                                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "proc/self");
  }
  ~FakeRoot() { fs::remove_all(root_); }
  void Write(const std::string& relative, const std::string& text) {
    const fs::path p = root_ / relative;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  std::string root() const { return root_.string(); }

 private:
  fs::path root_;
};

TEST(CgroupCpuLimitTest, V1TakesTheSmallestQuotaOnThePathUpToTheMount) {
  FakeRoot r;
  r.Write("proc/self/mountinfo", kHybridMountinfo);
  r.Write("proc/self/cgroup", "4:cpu:/kubepods/pod1/c1\n0::/\n");
  const std::string cpu = "sys/fs/cgroup/cpu";
  for (const char* dir : {"", "/kubepods", "/kubepods/pod1", "/kubepods/pod1/c1"}) {
    r.Write(cpu + dir + "/cpu.cfs_quota_us", "-1\n");
    r.Write(cpu + dir + "/cpu.cfs_period_us", "100000\n");
  }
  EXPECT_FALSE(CgroupCpuLimit(r.root()).has_value());  // -1 everywhere: no limit
  r.Write(cpu + "/kubepods/pod1/cpu.cfs_quota_us", "150000\n");
  EXPECT_DOUBLE_EQ(CgroupCpuLimit(r.root()).value(), 1.5);  // the pod's limit binds its container
  r.Write(cpu + "/kubepods/pod1/c1/cpu.cfs_quota_us", "300000\n");
  EXPECT_DOUBLE_EQ(CgroupCpuLimit(r.root()).value(), 1.5);
  r.Write(cpu + "/kubepods/pod1/c1/cpu.cfs_quota_us", "50000\n");
  EXPECT_DOUBLE_EQ(CgroupCpuLimit(r.root()).value(), 0.5);
  // A level whose files do not parse is skipped, not taken as a limit or as an error.
  r.Write(cpu + "/kubepods/pod1/c1/cpu.cfs_quota_us", "lots\n");
  EXPECT_DOUBLE_EQ(CgroupCpuLimit(r.root()).value(), 1.5);
}

TEST(CgroupCpuLimitTest, V2ReadsCpuMaxWhereNoV1CpuControllerIsMounted) {
  FakeRoot r;
  r.Write("proc/self/mountinfo", "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n");
  r.Write("proc/self/cgroup", "0::/system.slice/orrery.service\n");
  r.Write("sys/fs/cgroup/system.slice/cpu.max", "max 100000\n");
  r.Write("sys/fs/cgroup/system.slice/orrery.service/cpu.max", "max 100000\n");
  EXPECT_FALSE(CgroupCpuLimit(r.root()).has_value());
  r.Write("sys/fs/cgroup/system.slice/orrery.service/cpu.max", "200000 100000\n");
  EXPECT_DOUBLE_EQ(CgroupCpuLimit(r.root()).value(), 2.0);
}

// In a container the mount shows only the container's own cgroup (its root is that cgroup, or
// with a cgroup namespace both are "/"): the limit is read at the mount point.
TEST(CgroupCpuLimitTest, AContainerReadsItsLimitAtTheMountPoint) {
  FakeRoot r;
  r.Write("proc/self/mountinfo",
          "25 20 0:22 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n");
  r.Write("proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n");
  r.Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "250000\n");
  r.Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  EXPECT_DOUBLE_EQ(CgroupCpuLimit(r.root()).value(), 2.5);
  r.Write("proc/self/cgroup", "4:cpu,cpuacct:/elsewhere\n");  // outside the mounted sub-tree
  EXPECT_DOUBLE_EQ(CgroupCpuLimit(r.root()).value(), 2.5);
}

TEST(CgroupCpuLimitTest, NoLimitWhereNothingCanBeRead) {
  FakeRoot r;
  EXPECT_FALSE(CgroupCpuLimit(r.root()).has_value());  // no /proc files
  r.Write("proc/self/mountinfo", kHybridMountinfo);
  r.Write("proc/self/cgroup", "4:cpu:/a\n");
  EXPECT_FALSE(CgroupCpuLimit(r.root()).has_value());  // no cgroup files
}

TEST(UsableCpuCountTest, IsBetweenOneAndTheAffinityMask) {
  const int usable = UsableCpuCount();
  EXPECT_GE(usable, 1);
  EXPECT_LE(usable, AllowedCpuCount());
  if (!CgroupCpuLimit().has_value()) {
    EXPECT_EQ(usable, AllowedCpuCount());
  }
}

}  // namespace
}  // namespace orrery
