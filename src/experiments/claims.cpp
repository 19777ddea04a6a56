#include "experiments/claims.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <sstream>

#include "common/error.h"

namespace mambavl::experiments {

using json = nlohmann::json;

namespace {

const char* kShakingUp = "Shaking Up VLMs (Pantazopoulos et al., 2024)";
const char* kVLMamba = "VL-Mamba (Qiao et al., 2024)";
const char* kMambaOut = "MambaOut (Yu & Wang, 2024)";

struct Stat {
  double mean = 0, std = 0;
  int64_t n = 0;
};

// The summary row (variant, metric) of an experiment's results.json.
std::optional<Stat> find_stat(const json& res, const std::string& variant,
                              const std::string& metric) {
  // Rows that are not objects, or whose numbers are missing / null (NaN and inf are written as
  // null) / not numbers, count as absent: a claim is then "not run", never a crash.
  if (!res.contains("tables") || !res["tables"].is_object() ||
      !res["tables"].contains("summary") || !res["tables"]["summary"].is_array())
    return std::nullopt;
  for (const auto& r : res["tables"]["summary"]) {
    if (!r.is_object()) continue;
    auto str = [&](const char* k) {
      return r.contains(k) && r[k].is_string() ? r[k].get<std::string>() : std::string();
    };
    if (str("variant") != variant || str("metric") != metric) continue;
    auto num = [&](const char* k) { return r.contains(k) && r[k].is_number(); };
    if (!num("mean") || !num("std") || !num("n")) return std::nullopt;
    return Stat{r["mean"].get<double>(), r["std"].get<double>(), r["n"].get<int64_t>()};
  }
  return std::nullopt;
}

std::string num(double v) {
  char buf[32];
  if (std::fabs(v) >= 100 || v == 0)
    std::snprintf(buf, sizeof buf, "%.3g", v);
  else
    std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

std::string describe(const std::string& name, const Stat& s) {
  std::string t = name + " " + num(s.mean);
  if (s.n > 1) t += " ± " + num(s.std);
  return t;
}

std::string seeds_note(const Stat& a, const Stat& b) {
  const int64_t n = std::min(a.n, b.n);
  return " (" + std::to_string(n) + (n == 1 ? " seed/repeat" : " seeds/repeats") + ")";
}

struct Verdict {
  std::string verdict, evidence;
};

// "a > b" (or a < b when `greater` is false) on mean ± std intervals (claims.h).
Verdict directional(const std::string& an, const Stat& a, const std::string& bn, const Stat& b,
                    bool greater, const std::string& metric) {
  Verdict v;
  v.evidence = metric + ": " + describe(an, a) + " vs " + describe(bn, b) + seeds_note(a, b);
  if (a.n < 2 || b.n < 2) {
    v.verdict = "inconclusive";
    v.evidence += "; one seed: no spread to judge by";
    return v;
  }
  const double alo = a.mean - a.std, ahi = a.mean + a.std, blo = b.mean - b.std,
               bhi = b.mean + b.std;
  const bool a_above = alo > bhi, a_below = ahi < blo;
  if (greater ? a_above : a_below)
    v.verdict = "supported";
  else if (greater ? a_below : a_above)
    v.verdict = "not supported";
  else {
    v.verdict = "inconclusive";
    v.evidence += "; the spreads overlap";
  }
  return v;
}

// "a ≈ b" within `tolerance` (an equivalence check): supported when |mean difference| <= tolerance
// and the summed spread std a + std b <= 2 tolerance (the data are precise enough to show it);
// not supported when |difference| - (std a + std b) > tolerance; otherwise inconclusive.
Verdict approx(const std::string& an, const Stat& a, const std::string& bn, const Stat& b,
               double tolerance, const std::string& metric) {
  Verdict v;
  const double diff = std::fabs(a.mean - b.mean);
  const double sp = a.std + b.std;
  v.evidence = metric + ": " + describe(an, a) + " vs " + describe(bn, b) + seeds_note(a, b) +
               "; |difference| " + num(diff) + ", tolerance " + num(tolerance);
  if (a.n < 2 || b.n < 2) {
    v.verdict = "inconclusive";
    v.evidence += "; one seed: no spread to judge by";
    return v;
  }
  if (diff <= tolerance && sp <= 2 * tolerance) {
    v.verdict = "supported";
  } else if (diff - sp > tolerance) {
    v.verdict = "not supported";
  } else {
    v.verdict = "inconclusive";
    v.evidence += diff <= tolerance ? "; the spread (" + num(sp) + ") is too wide to show it"
                                    : "; the difference is within the spread of the tolerance";
  }
  return v;
}

// "a > threshold" (or < when `greater` is false) for one quantity with its spread.
Verdict versus_value(const std::string& an, const Stat& a, double threshold, bool greater,
                     const std::string& metric) {
  Verdict v;
  v.evidence = metric + ": " + describe(an, a) + " (" + std::to_string(a.n) +
               (a.n == 1 ? " seed/repeat" : " seeds/repeats") + "), threshold " + num(threshold);
  if (a.n < 2) {
    v.verdict = "inconclusive";
    v.evidence += "; one seed: no spread to judge by";
    return v;
  }
  const bool above = a.mean - a.std > threshold, below = a.mean + a.std < threshold;
  if (greater ? above : below)
    v.verdict = "supported";
  else if (greater ? below : above)
    v.verdict = "not supported";
  else {
    v.verdict = "inconclusive";
    v.evidence += "; the spread includes the threshold";
  }
  return v;
}

struct ClaimDef {
  std::string id, source, statement, experiment;
  // Evaluates on that experiment's results; nullopt when the needed rows are absent.
  std::function<std::optional<Verdict>(const json&)> eval;
};

// a vs b on `metric`, directional.
std::function<std::optional<Verdict>(const json&)> compare(std::string a, std::string b,
                                                           std::string metric, bool greater) {
  return [=](const json& r) -> std::optional<Verdict> {
    auto sa = find_stat(r, a, metric), sb = find_stat(r, b, metric);
    if (!sa || !sb) return std::nullopt;
    return directional(a, *sa, b, *sb, greater, metric);
  };
}

const std::vector<ClaimDef>& claim_defs() {
  static const std::vector<ClaimDef> defs = {
      {"retrieval-transformer-faster", kShakingUp,
       "On the synthetic retrieval task the Transformer learns almost at once; Mamba learns more "
       "slowly (learning speed = mean accuracy over the evaluations during training)",
       "retrieval", compare("transformer", "mamba", "learning_speed", true)},
      {"retrieval-mamba-middle", kShakingUp,
       "Mamba retrieves worst from the middle of the sequence (middle deficit = mean accuracy of "
       "the first and last thirds of positions minus the middle third's, > 0)",
       "retrieval",
       [](const json& r) -> std::optional<Verdict> {
         auto s = find_stat(r, "mamba", "middle_deficit");
         if (!s) return std::nullopt;
         return versus_value("mamba", *s, 0.0, true, "middle_deficit");
       }},
      {"coarse-fine-caption", kShakingUp,
       "Mamba-VL is at least as good as Pythia-VL at captioning (coarse task; supported only when "
       "clearly better, equal within the spread is inconclusive)", "coarse-fine",
       compare("mamba-vl", "pythia-vl", "caption_cider_d", true)},
      {"coarse-fine-vqa", kShakingUp,
       "Mamba-VL is at least as good as Pythia-VL at VQA (coarse task; supported only when clearly "
       "better)", "coarse-fine",
       compare("mamba-vl", "pythia-vl", "vqa_exact_match", true)},
      {"coarse-fine-grounding", kShakingUp,
       "Mamba-VL is worse than Pythia-VL at grounding (fine-grained task)", "coarse-fine",
       compare("mamba-vl", "pythia-vl", "grounding_accuracy", false)},
      {"task-aware-helps-mamba", kShakingUp,
       "Task-aware encoding (the instruction before the image) improves Mamba-VL's grounding",
       "task-aware",
       compare("mamba-vl/instruction_first", "mamba-vl/default", "grounding_accuracy", true)},
      {"connectors-vss-l2", kVLMamba,
       "The VSS-L2 connector (with the cross-scan, CSM) is at least as good as the MLP connector "
       "(VQA exact match; supported only when clearly better)",
       "connectors", compare("vss-l2/csm", "mlp", "vqa_exact_match", true)},
      {"mambaout-gated-cnn", kMambaOut,
       "For image classification the SSM is not needed: Gated-CNN blocks ≈ SSM-mixer blocks "
       "(validation top-1 within 3 points)",
       "mambaout",
       [](const json& r) -> std::optional<Verdict> {
         auto a = find_stat(r, "gated-cnn", "val_top1"), b = find_stat(r, "ssm-mixer", "val_top1");
         if (!a || !b) return std::nullopt;
         return approx("gated-cnn", *a, "ssm-mixer", *b, 0.03, "val_top1");
       }},
      {"mambaout-vit-causal", kMambaOut,
       "Causal (token-mixing only from the past) attention hurts a ViT's image classification "
       "compared with fully visible attention",
       "mambaout", compare("vit-causal", "vit-full", "val_top1", false)},
      {"efficiency-mamba-decode-flat", kShakingUp,
       "Mamba's decode time per token is flat in the context length (growth from the shortest "
       "to the longest context, from the power-law fit over every context, within 15 %)",
       "efficiency",
       [](const json& r) -> std::optional<Verdict> {
         auto s = find_stat(r, "mamba", "decode_growth_fit");
         if (!s) return std::nullopt;
         return approx("mamba", *s, "flat", Stat{1.0, 0.0, s->n}, 0.15, "decode_growth_fit");
       }},
      {"efficiency-attention-decode-grows", kShakingUp,
       "Attention's decode time per token grows with the context (KV cache), more than Mamba's",
       "efficiency", compare("pythia", "mamba", "decode_growth_fit", true)},
      {"efficiency-prefill-scaling", kShakingUp,
       "Prefill time grows faster with the sequence length for attention than for Mamba (fitted "
       "exponent of time vs length)",
       "efficiency", compare("pythia", "mamba", "prefill_exponent", true)},
  };
  return defs;
}

}  // namespace

std::vector<Claim> evaluate_claims(const std::vector<json>& results) {
  std::map<std::string, json> by_name;
  for (const auto& r : results)
    if (r.is_object() && r.contains("experiment") && r["experiment"].is_string() &&
        !(r.contains("dry_run") && r["dry_run"].is_boolean() && r["dry_run"].get<bool>()))
      by_name[r["experiment"].get<std::string>()] = r;
  std::vector<Claim> out;
  for (const auto& d : claim_defs()) {
    Claim c{d.id, d.source, d.statement, d.experiment, "not run", ""};
    auto it = by_name.find(d.experiment);
    if (it == by_name.end()) {
      c.evidence = "no results of experiment '" + d.experiment + "' given";
    } else if (auto v = d.eval(it->second)) {
      c.verdict = v->verdict;
      c.evidence = v->evidence;
    } else {
      c.evidence = "the results of '" + d.experiment + "' lack the variants or metrics it needs";
    }
    out.push_back(c);
  }
  return out;
}

json claims_json(const std::vector<Claim>& claims) {
  json a = json::array();
  for (const auto& c : claims)
    a.push_back({{"id", c.id},
                 {"source", c.source},
                 {"statement", c.statement},
                 {"experiment", c.experiment},
                 {"verdict", c.verdict},
                 {"evidence", c.evidence}});
  return a;
}

std::string claims_text(const std::vector<Claim>& claims) {
  std::ostringstream s;
  for (const auto& c : claims) {
    char head[64];
    std::snprintf(head, sizeof head, "  %-14s ", c.verdict.c_str());
    s << head << c.statement << "  [" << c.source << "]\n"
      << std::string(17, ' ') << c.evidence << "\n";
  }
  return s.str();
}

}  // namespace mambavl::experiments
