// Loading weights by memory-mapping safetensors (SafetensorsFile::view, io::load_module,
// MambaLM::load): views share the file's mapping copy-on-write (a write never reaches the file),
// loaded models compute exactly what the copying path did, a misaligned span is copied, and the
// peak resident memory of `mambavl perplexity` grows with the weights once, not twice.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/mamba.h"
#include "models/registry.h"
#include "test_util.h"

using namespace mambavl;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = MAMBAVL_FIXTURES_DIR;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The file a mapping of this process that contains `p` maps ("" if none): /proc/self/maps.
std::string mapped_file(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream s(line);
    std::string range, perms, off, dev, inode, path;
    s >> range >> perms >> off >> dev >> inode;
    std::getline(s >> std::ws, path);
    const auto dash = range.find('-');
    const uintptr_t lo = std::stoull(range.substr(0, dash), nullptr, 16);
    const uintptr_t hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (a >= lo && a < hi) return path;
  }
  return "";
}

bool maps(const at::Tensor& t, const fs::path& file) {
  return mapped_file(t.data_ptr()) == fs::canonical(file).string();
}

class LoadMemory : public testing_util::TempDirTest {
 protected:
  LoadMemory() : TempDirTest("mambavl_loadmem_") {}
};

}  // namespace

TEST_F(LoadMemory, ViewSharesTheMappingCopyOnWrite) {
  const fs::path f = dir / "t.safetensors";
  const at::Tensor big = at::randn({64, 1024});  // 256 KiB: whole pages inside the span
  io::save_safetensors(f, {{"big", big}, {"small", at::arange(5, at::kInt)}});
  const std::string bytes = read_bytes(f);

  at::Tensor v;
  {
    io::SafetensorsFile file(f);
    EXPECT_TRUE(file.viewable("big"));
    v = file.view("big");
    EXPECT_TRUE(file.in_mapping(v.data_ptr()));
    EXPECT_TRUE(maps(v, f));
    EXPECT_TRUE(at::equal(v, big));
    const at::Tensor copy = file.tensor("big");  // read, not a view
    EXPECT_FALSE(file.in_mapping(copy.data_ptr()));
    EXPECT_TRUE(at::equal(copy, big));
    EXPECT_TRUE(at::equal(file.view("small"), at::arange(5, at::kInt)));
  }
  // The view outlives the file object; writing to it never reaches the file.
  EXPECT_TRUE(maps(v, f));
  v.fill_(7.0f);
  EXPECT_EQ(v.sum().item<double>(), 7.0 * big.numel());
  EXPECT_EQ(read_bytes(f), bytes);
  EXPECT_TRUE(at::equal(io::SafetensorsFile(f).tensor("big"), big));
  v = at::Tensor();

  // When the last view of a tensor goes, its whole pages are dropped (madvise): a later view of
  // the same file object reads the file's bytes there again, not the discarded writes.
  io::SafetensorsFile file(f);
  at::Tensor w = file.view("big");
  const auto* base = static_cast<const uint8_t*>(w.data_ptr());
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t a = reinterpret_cast<uintptr_t>(base);
  const int64_t first = static_cast<int64_t>(((a + page - 1) / page * page - a) / 4);
  const int64_t last = static_cast<int64_t>(((a + w.nbytes()) / page * page - a) / 4);
  ASSERT_GT(last, first);
  w.fill_(3.0f);
  w = at::Tensor();
  const at::Tensor again = file.view("big").flatten();
  EXPECT_TRUE(at::equal(again.narrow(0, first, last - first),
                        big.flatten().narrow(0, first, last - first)));
}

TEST_F(LoadMemory, MisalignedSpanIsCopiedNotMapped) {
  // Header of 10 bytes: the buffer starts at byte 18, so an F32 tensor at offset 0 is misaligned.
  const std::string header = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  std::string padded = header;
  while ((8 + padded.size()) % 4 != 2) padded += ' ';
  std::string file;
  for (int i = 0; i < 8; ++i) file += static_cast<char>((padded.size() >> (8 * i)) & 0xff);
  file += padded;
  const float vals[3] = {1.5f, -2.0f, 3.25f};
  file.append(reinterpret_cast<const char*>(vals), sizeof vals);
  const fs::path f = dir / "odd.safetensors";
  std::ofstream(f, std::ios::binary) << file;

  io::SafetensorsFile st(f);
  EXPECT_FALSE(st.viewable("w"));
  const at::Tensor t = st.view("w");
  EXPECT_FALSE(st.in_mapping(t.data_ptr()));
  EXPECT_TRUE(at::equal(t, at::tensor({1.5f, -2.0f, 3.25f})));
}

TEST_F(LoadMemory, ReadIntoConvertsInChunksAndRejectsWrongTargets) {
  const fs::path f = dir / "c.safetensors";
  const at::Tensor big = at::randn({3 << 20});  // 12 MiB of F32: more than one 8 MB chunk
  io::save_safetensors(f, {{"big", big}});
  io::SafetensorsFile st(f);
  at::Tensor bf = at::empty({3 << 20}, at::kBFloat16);
  st.read_into("big", bf);
  EXPECT_TRUE(at::equal(bf, big.to(at::kBFloat16)));
  at::Tensor wrong = at::empty({5});
  testing_util::expect_error([&] { st.read_into("big", wrong); },
                             {f.string(), "'big'", "contiguous CPU tensor of 3145728 elements"});
}

// A model loaded from a folder whose dtype matches runs on the mapped file itself and gives the
// copying path's outputs exactly; writing to a parameter (training) leaves the file as it was.
TEST_F(LoadMemory, MambaLoadMapsWeightsAndMatchesTheCopy) {
  const fs::path src = kFixtures / "mamba-tiny";
  auto m = models::MambaLM::load(src);
  const fs::path file = src / "model.safetensors";
  ASSERT_TRUE(maps(m->embeddings->weight, file));
  ASSERT_TRUE(maps(m->layers[0]->norm->weight, file));

  // The copying path: the same values in owned memory.
  const at::Tensor ids = at::tensor({1, 5, 9, 3, 7, 2}, at::kLong).view({1, 6});
  auto copied = models::MambaLM::load(src);
  {
    at::NoGradGuard ng;
    for (auto& p : copied->module().named_parameters()) {
      p.value().set_data(p.value().clone());
      ASSERT_FALSE(maps(p.value(), file)) << p.key();
    }
    EXPECT_TRUE(at::equal(m->forward(ids), copied->forward(ids)));
  }

  const std::string before = read_bytes(file);
  {
    at::NoGradGuard ng;
    m->embeddings->weight.add_(1.0);
    m->layers[0]->norm->weight.mul_(2.0);
  }
  EXPECT_EQ(read_bytes(file), before);
  EXPECT_TRUE(m->embeddings->weight.requires_grad());  // still trainable
  m->forward(ids).sum().backward();
  EXPECT_TRUE(m->embeddings->weight.grad().defined());

  // bf16: loaded straight into bf16 equals loading f32 and converting.
  auto b = models::MambaLM::load(src, at::kBFloat16);
  auto c = models::MambaLM::load(src);
  c->to_dtype(at::kBFloat16);
  EXPECT_EQ(b->dtype(), at::kBFloat16);
  for (const auto& p : c->module().named_parameters()) {
    const at::Tensor q = b->module().named_parameters()[p.key()];
    EXPECT_EQ(q.scalar_type(), p.value().scalar_type()) << p.key();
    EXPECT_TRUE(at::equal(q, p.value())) << p.key();
  }
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(b->forward(ids), c->forward(ids)));
}

TEST_F(LoadMemory, Bf16FolderIsMappedForABf16Run) {
  const fs::path src = kFixtures / "mamba-tiny-bf16";
  io::CheckpointFolder ckpt(src);
  ASSERT_EQ(ckpt.dtype("backbone.embeddings.weight"), "BF16");
  auto m = models::load_causal_lm(src, at::kBFloat16);
  auto* mm = dynamic_cast<models::MambaLM*>(m.get());
  ASSERT_NE(mm, nullptr);
  EXPECT_TRUE(maps(mm->embeddings->weight, src / "model.safetensors"));
  auto f = models::load_causal_lm(src);  // f32 run: converted, owned
  EXPECT_FALSE(maps(dynamic_cast<models::MambaLM*>(f.get())->embeddings->weight,
                    src / "model.safetensors"));
}

// int8 from a mapped f32 model equals int8 from an owned copy of it.
TEST_F(LoadMemory, Int8FromAMappedModelMatches) {
  auto m = models::MambaLM::load(kFixtures / "mamba-tiny");
  auto c = models::MambaLM::load(kFixtures / "mamba-tiny");
  {
    at::NoGradGuard ng;
    for (auto& p : c->module().parameters()) p.set_data(p.clone());
  }
  m->quantize_int8();
  c->quantize_int8();
  for (const auto& p : c->module().named_parameters())
    EXPECT_TRUE(at::equal(m->module().named_parameters()[p.key()], p.value())) << p.key();
  for (const auto& b : c->module().named_buffers())
    EXPECT_TRUE(at::equal(m->module().named_buffers()[b.key()], b.value())) << b.key();
}

namespace {

// Peak resident memory (ru_maxrss, bytes) of `mambavl <args>`; -1 if it failed.
// The CLI's own peak RSS (VmHWM), which it writes at exit to MAMBAVL_PEAK_RSS_FILE (apps/main.cpp):
// wait4's ru_maxrss would also count this process's pages, which the forked child starts with.
int64_t cli_peak_rss(const std::vector<std::string>& args, const fs::path& report) {
  std::vector<char*> argv;
  std::string cli = MAMBAVL_CLI;
  argv.push_back(cli.data());
  std::vector<std::string> own = args;
  for (auto& a : own) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
  env_s.push_back("MAMBAVL_PEAK_RSS_FILE=" + report.string());
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  fs::remove(report);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!::freopen("/dev/null", "w", stdout) || !::freopen("/dev/null", "w", stderr)) _exit(126);
    ::execve(cli.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  int64_t peak = -1;
  std::ifstream in(report);
  if (!(in >> peak)) return -1;
  return peak;
}

// A Mamba folder with a big tied vocabulary (the embedding is nearly all of the weights).
int64_t write_model(const fs::path& d, int64_t vocab) {
  nlohmann::json cfg = nlohmann::json::parse(read_bytes(kFixtures / "mamba-tiny" / "config.json"));
  cfg["vocab_size"] = vocab;
  cfg["hidden_size"] = 256;
  cfg["intermediate_size"] = 512;
  cfg["time_step_rank"] = 16;
  auto m = models::make_causal_lm(cfg, 1, /*initialize=*/true, "test");
  m->save(d);
  int64_t bytes = 0;
  for (const auto& p : m->module().parameters()) bytes += p.nbytes();
  return bytes;
}

}  // namespace

// Peak RSS of `perplexity` on a ~200 MB f32 folder, less that on a tiny one (the same process
// baseline), stays within the weights + 20 % + 32 MB; copying the weights would take twice them.
TEST_F(LoadMemory, PerplexityPeakMemoryHoldsTheWeightsOnce) {
  const int64_t big = write_model(dir / "big", 200000);
  const int64_t tiny = write_model(dir / "tiny", 1000);
  ASSERT_GT(big, 150ll << 20);
  const std::vector<std::string> run = {"perplexity", "--ids", "1,5,9,3,7,2,8,4", "--threads", "1",
                                        "--model"};
  auto with = [&](const fs::path& m) {
    auto a = run;
    a.push_back(m.string());
    return a;
  };
  const int64_t peak_big = cli_peak_rss(with(dir / "big"), dir / "peak");
  const int64_t peak_tiny = cli_peak_rss(with(dir / "tiny"), dir / "peak");
  ASSERT_GT(peak_big, 0);
  ASSERT_GT(peak_tiny, 0);
  const double growth = static_cast<double>(peak_big - peak_tiny);
  const double allowed = 1.2 * static_cast<double>(big - tiny) + (32 << 20);
  std::printf("peak RSS: %.1f MB (big, %.1f MB of weights), %.1f MB (tiny); growth %.1f MB, "
              "allowed %.1f MB\n",
              peak_big / 1e6, big / 1e6, peak_tiny / 1e6, growth / 1e6, allowed / 1e6);
  EXPECT_LE(growth, allowed);
}

// The reported peak is the child's own: with 256 MB touched in this process, `mambavl --help`
// still reports its own (~100-150 MB with LibTorch), where wait4's ru_maxrss reports this process's.
TEST_F(LoadMemory, CliPeakReportIsTheChildsOwn) {
  const int64_t bytes = int64_t{256} << 20;
  std::vector<char> ballast(static_cast<size_t>(bytes));
  for (size_t i = 0; i < ballast.size(); i += 4096) ballast[i] = static_cast<char>(i / 4096 + 1);
  const int64_t peak = cli_peak_rss({"--help"}, dir / "peak");
  std::printf("mambavl --help peak RSS: %.1f MB (this process holds %.1f MB more)\n", peak / 1e6,
              bytes / 1e6);
  EXPECT_GT(peak, 1 << 20);
  EXPECT_LT(peak, bytes);
  EXPECT_NE(ballast[4096], ballast[8192]);  // (the ballast stays live)
}
