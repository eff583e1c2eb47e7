// Recipes: shipped files, include and --set precedence, every kind of error (one line with
// file:line and the key), the resolved-TOML round trip and the key reference in
// recipes/README.md.
#include "core/error.h"
#include "core/recipe/recipe.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <unistd.h>

using namespace sigma;
namespace fs = std::filesystem;

namespace {

// The repository root: from this file's path (CMake compiles it by absolute path), else
// the nearest folder above the working directory that holds recipes/README.md.
fs::path repo_root() {
  fs::path from_source = fs::path(__FILE__).parent_path().parent_path();
  if (fs::exists(from_source / "recipes/README.md")) return from_source;
  for (fs::path dir = fs::current_path(); !dir.empty(); dir = dir.parent_path()) {
    if (fs::exists(dir / "recipes/README.md")) return dir;
    if (dir == dir.parent_path()) break;
  }
  FAIL("cannot find the repository (recipes/README.md) from " << fs::current_path());
  return {};
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A scratch folder for recipe files, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("sigma_test_recipe_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& text) const {
    fs::path file = path_ / name;
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
    return file.string();
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The UserError message of `f`, checked to be one line.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    std::string message = e.what();
    CHECK_MESSAGE(message.find('\n') == std::string::npos, message);
    return message;
  }
  return "(no error)";
}

std::string parse_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse_recipe(text, "x.toml", overrides); });
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A valid recipe: every section at its defaults except the one required choice.
const std::string kMinimal = "[train]\nsteps = 10\n";

void check_same_sections(const Recipe& a, const Recipe& b) {
  CHECK(a.run == b.run);
  CHECK(a.model == b.model);
  CHECK(a.data == b.data);
  CHECK(a.train == b.train);
  CHECK(a.optimizer == b.optimizer);
  CHECK(a.lr_scheduler == b.lr_scheduler);
  CHECK(a.checkpoint == b.checkpoint);
  CHECK(a.eval == b.eval);
  CHECK(a.log == b.log);
}

std::vector<fs::path> shipped_recipes() {
  std::vector<fs::path> paths;
  for (const auto& entry : fs::recursive_directory_iterator(repo_root() / "recipes"))
    if (entry.path().extension() == ".toml") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace

TEST_CASE("recipe: every shipped recipe loads") {
  std::vector<fs::path> paths = shipped_recipes();
  CHECK(paths.size() >= 5);
  for (const fs::path& path : paths) {
    INFO(path.string());
    CHECK_NOTHROW(load_recipe(path.string()));
  }
}

TEST_CASE("recipe: shipped recipes hold the published shapes, and includes inherit them") {
  fs::path recipes = repo_root() / "recipes";
  Recipe small = load_recipe((recipes / "sigma-1.5b.toml").string());
  Recipe big = load_recipe((recipes / "sigma-10b.toml").string());
  CHECK(small.model.n_layers == 26);
  CHECK(small.model.attention.d_augq == 3072);
  CHECK(small.train.tokens == 6'500'000'000'000);
  CHECK(small.lr_scheduler.kind == LrSchedule::kPhases);
  CHECK(small.lr_scheduler.phases.size() == 3);
  CHECK(small.data.sources.size() == 3);
  CHECK(big.model.n_layers == 32);
  CHECK(big.model.d_model == 4096);
  CHECK(big.model.attention.d_qk == 128);
  CHECK(big.model.attention.n_q == 32);  // inherited
  CHECK(big.model.attention.n_k == 4);
  CHECK(big.model.attention.n_v == 16);
  CHECK(big.optimizer.lr == 1.5e-4);
  CHECK(big.lr_scheduler.phases == small.lr_scheduler.phases);
  CHECK(big.run.out_dir == "runs/sigma-10b");

  Recipe dense = load_recipe((recipes / "tiny/dense.toml").string());
  Recipe gqa = load_recipe((recipes / "tiny/gqa-qknorm.toml").string());
  CHECK(dense.data.seq_len == 32);
  CHECK(dense.train.global_batch_tokens == 2 * dense.train.micro_batch * dense.data.seq_len);
  CHECK(dense.model.attention.n_k != dense.model.attention.n_v);
  CHECK(gqa.model.attention.n_k == 2);
  CHECK(gqa.model.attention.n_v == 2);
  CHECK(gqa.model.attention.d_augq == 0);
  CHECK(gqa.model.attention.qk_norm);
  CHECK(gqa.model.tie_embeddings);
  CHECK(gqa.data.seq_len == 32);
  CHECK(gqa.model.d_model == dense.model.d_model);
}

TEST_CASE("recipe: the key reference in recipes/README.md is up to date") {
  fs::path readme = repo_root() / "recipes/README.md";
  std::string text = read_file(readme);
  CHECK_MESSAGE(text == with_key_reference(text),
                "recipes/README.md is stale; regenerate it (see core/recipe/README.md)");
  CHECK(contains(text, "`[model.attention]`"));
  CHECK(contains(text, "| `n_k` |"));
}

TEST_CASE("recipe: resolved_toml reads back to the same recipe") {
  std::vector<std::string> overrides = {
      "run.seed=99", "model.norm_eps=3e-7", "model.attention.qk_norm=true",
      "data.shuffle=false", "train.grad_clip=0.5", "train.threads=3",
      "optimizer.decay_norms_and_embeddings=true", "lr_scheduler.decay_shape=sqrt",
      "checkpoint.save_final=false", "eval.batches=3", "log.peak_tflops=123.25",
      "data.sources=[{path=\"a b/\\\"q\\\"\",weight=0.1},{path=\"c\",weight=2.5}]"};
  std::vector<Recipe> recipes;
  for (const fs::path& path : shipped_recipes()) recipes.push_back(load_recipe(path.string()));
  recipes.push_back(load_recipe((repo_root() / "recipes/sigma-1.5b.toml").string(), overrides));
  for (const Recipe& recipe : recipes) {
    INFO(recipe.source_path);
    CHECK(!contains(recipe.resolved_toml, "include ="));
    Recipe again = parse_recipe(recipe.resolved_toml, "recipe.toml");
    check_same_sections(recipe, again);
    CHECK(again.resolved_toml == recipe.resolved_toml);
  }
  const Recipe& last = recipes.back();
  CHECK(last.data.sources[0].path == "a b/\"q\"");
  CHECK(last.log.peak_tflops == 123.25);
  CHECK(last.lr_scheduler.decay_shape == LrShape::kSqrt);
}

TEST_CASE("recipe: includes merge tables, replace arrays, and --set wins last") {
  TempDir dir;
  dir.write("base/base.toml",
            "[train]\nsteps = 10\nmicro_batch = 2\n[optimizer]\nlr = 1e-3\nbeta2 = 0.99\n"
            "[data]\nsources = [{ path = \"a\" }, { path = \"b\" }]\n");
  dir.write("base/mid.toml", "include = \"base.toml\"\n[optimizer]\nlr = 2e-3\n");
  std::string child = dir.write(
      "child.toml",
      "include = \"base/mid.toml\"\n[train]\nsteps = 20\n[data]\nsources = [{ path = \"c\" }]\n");
  Recipe r = load_recipe(child, {"optimizer.lr=5e-3", "train.steps=30", "train.steps=40"});
  CHECK(r.train.steps == 40);        // the later --set wins
  CHECK(r.train.micro_batch == 2);   // tables merge key by key
  CHECK(r.optimizer.lr == 5e-3);     // --set beats the files
  CHECK(r.optimizer.beta2 == 0.99);  // from two includes down
  REQUIRE(r.data.sources.size() == 1);  // arrays are replaced whole
  CHECK(r.data.sources[0].path == "c");
  CHECK(load_recipe(child).optimizer.lr == 2e-3);  // the nearer file wins
}

TEST_CASE("recipe: an error in an included file names that file and line") {
  TempDir dir;
  dir.write("base.toml", "[train]\nsteps = 10\n\n[model]\nn_layers = 0\n");
  std::string child = dir.write("child.toml", "include = \"base.toml\"\n[train]\nsteps = 5\n");
  std::string message = error_of([&] { load_recipe(child); });
  CHECK(contains(message, "base.toml:5: model.n_layers: 0 is out of range; allowed: >= 1"));
}

TEST_CASE("recipe: include cycles and missing files are errors") {
  TempDir dir;
  std::string a = dir.write("a.toml", "include = \"b.toml\"\n" + kMinimal);
  dir.write("b.toml", "# b\ninclude = \"a.toml\"\n");
  std::string cycle = error_of([&] { load_recipe(a); });
  CHECK(contains(cycle, "b.toml:2: include: cycle "));
  CHECK(contains(cycle, "a.toml -> "));

  std::string self = dir.write("self.toml", "include = \"self.toml\"\n");
  CHECK(contains(error_of([&] { load_recipe(self); }), "self.toml:1: include: cycle"));

  std::string missing = dir.write("m.toml", "# m\n\ninclude = \"nope.toml\"\n" + kMinimal);
  std::string message = error_of([&] { load_recipe(missing); });
  CHECK(contains(message, "m.toml:3: include: cannot read "));
  CHECK(contains(message, "nope.toml: no such file"));
  CHECK(contains(error_of([] { load_recipe("no/such/recipe.toml"); }),
                 "no/such/recipe.toml: cannot read the recipe: no such file"));
  CHECK(contains(parse_error("include = 3\n"), "x.toml:1: include: expected a string"));
}

TEST_CASE("recipe: --set reads every type") {
  Recipe r = parse_recipe(
      kMinimal, "x.toml",
      {"train.steps=20", "optimizer.lr=1e-2", "optimizer.weight_decay=0", "data.shuffle=false",
       "run.name=my-run", "run.out_dir=\"/tmp/a b\"", "lr_scheduler.kind=wsd",
       "train.precision=fp32", "model.attention.n_k=4", "run.seed=7", "data.seq_len=64",
       "checkpoint.interval=5", "data.sources=[{path=\"x\",weight=1}]"});
  CHECK(r.train.steps == 20);
  CHECK(r.optimizer.lr == 1e-2);
  CHECK(r.optimizer.weight_decay == 0.0);  // an integer where a float is expected
  CHECK(!r.data.shuffle);
  CHECK(r.run.name == "my-run");  // not TOML: a bare string
  CHECK(r.run.out_dir == "/tmp/a b");
  CHECK(r.lr_scheduler.kind == LrSchedule::kWsd);
  CHECK(r.model.attention.n_k == 4);
  CHECK(r.run.seed == 7);
  CHECK(r.data.seq_len == 64);
  CHECK(r.checkpoint.interval == 5);
  REQUIRE(r.data.sources.size() == 1);
  CHECK(r.data.sources[0].path == "x");
  CHECK(r.data.sources[0].weight == 1.0);

  // A whole float is an integer: train.tokens = 6.5e12.
  Recipe t = parse_recipe(kMinimal, "x.toml", {"train.steps=0", "train.tokens=6.5e12"});
  CHECK(t.train.tokens == 6'500'000'000'000);
}

TEST_CASE("recipe: --set errors name the argument") {
  CHECK(parse_error(kMinimal, {"train.steps=abc"}) ==
        "--set train.steps=abc: expected an integer, got string \"abc\"");
  CHECK(parse_error(kMinimal, {"train.stpes=3"}) ==
        "--set train.stpes=3: unknown key; did you mean train.steps?");
  CHECK(contains(parse_error(kMinimal, {"trian.steps=3"}),
                 "--set trian.steps=3: trian: unknown section; did you mean train?"));
  CHECK(contains(parse_error(kMinimal, {"steps=3"}), "--set steps=3: expected section.key=value"));
  CHECK(contains(parse_error(kMinimal, {"train.steps"}), "expected section.key=value"));
  CHECK(contains(parse_error(kMinimal, {"model.attention.n_k=3"}),
                 "--set model.attention.n_k=3: 3 does not divide model.attention.n_q = 8"));
  CHECK(contains(parse_error(kMinimal, {"data.sources=[{path=\"x\",weight=-1}]"}),
                 "data.sources[0].weight: -1.0 is out of range; allowed: > 0"));
}

TEST_CASE("recipe: unknown keys and sections suggest the nearest valid one") {
  CHECK(parse_error("[train]\nsteps = 10\nstpes = 3\n") ==
        "x.toml:3: train.stpes: unknown key; did you mean train.steps?");
  // The same name in another section.
  CHECK(parse_error(kMinimal + "seq_len = 64\n") ==
        "x.toml:3: train.seq_len: unknown key; did you mean data.seq_len?");
  CHECK(parse_error(kMinimal + "[trainer]\nsteps = 1\n") ==
        "x.toml:3: trainer: unknown section; did you mean train?");
  CHECK(parse_error(kMinimal + "[model.attn]\nn_q = 1\n") ==
        "x.toml:3: model.attn: unknown section; did you mean model.attention?");
  // Nothing close: the table's keys.
  CHECK(parse_error(kMinimal + "[eval]\nzzz = 1\n") ==
        "x.toml:4: eval.zzz: unknown key; allowed keys: interval, batches");
  CHECK(parse_error(kMinimal + "[data]\nsources = [{ pth = \"x\" }]\n") ==
        "x.toml:4: data.sources[0].pth: unknown key; did you mean data.sources[0].path?");
  CHECK(parse_error("steps = 3\n") == "x.toml:1: steps: unknown key; did you mean train.steps?");
}

TEST_CASE("recipe: type errors name file, line and key") {
  CHECK(parse_error(kMinimal + "[model.attention]\nn_q = \"8\"\n") ==
        "x.toml:4: model.attention.n_q: expected an integer, got string \"8\"");
  CHECK(parse_error(kMinimal + "[optimizer]\nlr = \"fast\"\n") ==
        "x.toml:4: optimizer.lr: expected a number, got string \"fast\"");
  CHECK(parse_error(kMinimal + "[data]\nshuffle = 1\n") ==
        "x.toml:4: data.shuffle: expected true or false, got integer 1");
  CHECK(parse_error(kMinimal + "[run]\nname = 5\n") ==
        "x.toml:4: run.name: expected a string, got integer 5");
  CHECK(parse_error(kMinimal + "micro_batch = 2.5\n").find("expected an integer") !=
        std::string::npos);
  CHECK(parse_error("train = 3\n") == "x.toml:1: train: expected a table, got integer 3");
  CHECK(parse_error(kMinimal + "[data]\nsources = [1]\n") ==
        "x.toml:4: data.sources[0]: expected a table, got integer 1");
}

TEST_CASE("recipe: enum keys read their names and list them when wrong") {
  const std::vector<std::pair<std::string, LrSchedule>> kinds = {
      {"constant", LrSchedule::kConstant}, {"cosine", LrSchedule::kCosine},
      {"wsd", LrSchedule::kWsd}};
  for (const auto& [name, kind] : kinds)
    CHECK(parse_recipe(kMinimal, "x.toml", {"lr_scheduler.kind=" + name}).lr_scheduler.kind ==
          kind);
  const std::vector<std::pair<std::string, LrShape>> shapes = {
      {"constant", LrShape::kConstant}, {"linear", LrShape::kLinear},
      {"cosine", LrShape::kCosine}, {"sqrt", LrShape::kSqrt}};
  for (const auto& [name, shape] : shapes)
    CHECK(parse_recipe(kMinimal, "x.toml", {"lr_scheduler.decay_shape=" + name})
              .lr_scheduler.decay_shape == shape);
  Recipe cuda = parse_recipe(kMinimal, "x.toml", {"train.device=cuda", "train.precision=bf16"});
  CHECK(cuda.train.device == DeviceKind::kCuda);
  CHECK(cuda.train.precision == Precision::kBf16);
  CHECK(parse_recipe(kMinimal, "x.toml", {"train.device=cpu"}).train.device == DeviceKind::kCpu);
  Recipe phases = parse_recipe(
      kMinimal + "[lr_scheduler]\nkind = \"phases\"\nphases = [\n"
                 "  { fraction = 0.75, shape = \"constant\" },\n"
                 "  { fraction = 0.25, start = 1.0, end = 0.0, shape = \"cosine\" },\n]\n",
      "x.toml");
  REQUIRE(phases.lr_scheduler.phases.size() == 2);
  CHECK(phases.lr_scheduler.phases[1].shape == LrShape::kCosine);
  CHECK(phases.lr_scheduler.phases[1].end == 0.0);
  CHECK(parse_error(kMinimal + "[lr_scheduler]\nkind = \"cosin\"\n") ==
        "x.toml:4: lr_scheduler.kind: unknown value \"cosin\"; allowed: \"constant\", "
        "\"cosine\", \"wsd\", \"phases\"");
  CHECK(parse_error(kMinimal + "[model]\nfamily = \"llama\"\n") ==
        "x.toml:4: model.family: unknown value \"llama\"; allowed: \"sigma\"");
  CHECK(contains(parse_error(kMinimal, {"train.device=gpu"}),
                 "unknown value \"gpu\"; allowed: \"auto\", \"cpu\", \"cuda\""));
}

TEST_CASE("recipe: ranges reject zero and negative sizes with what is allowed") {
  struct Case {
    std::string set, expect;
  };
  const std::vector<Case> cases = {
      {"model.n_layers=0", "0 is out of range; allowed: >= 1"},
      {"model.d_model=-4", "-4 is out of range; allowed: >= 1"},
      {"model.vocab_size=0", "0 is out of range; allowed: >= 1"},
      {"model.attention.n_q=0", "0 is out of range; allowed: >= 1"},
      {"model.attention.d_augq=-1", "-1 is out of range; allowed: >= 0"},
      {"data.seq_len=0", "0 is out of range; allowed: >= 1"},
      {"data.valid_fraction=1", "1.0 is out of range; allowed: [0, 1)"},
      {"train.micro_batch=0", "0 is out of range; allowed: >= 1"},
      {"train.steps=-1", "-1 is out of range; allowed: >= 0"},
      {"optimizer.lr=-0.1", "-0.1 is out of range; allowed: >= 0"},
      {"optimizer.eps=0", "0.0 is out of range; allowed: > 0"},
      {"optimizer.beta1=1.0", "1.0 is out of range; allowed: [0, 1)"},
      {"optimizer.beta2=-0.1", "-0.1 is out of range; allowed: [0, 1)"},
      {"lr_scheduler.warmup_steps=-1", "-1 is out of range; allowed: >= 0"},
      {"checkpoint.keep=-1", "-1 is out of range; allowed: >= 0"},
      {"checkpoint.interval=-5", "-5 is out of range; allowed: >= 0"},
      {"run.seed=-1", "-1 is out of range; allowed: >= 0"},
      {"optimizer.lr=nan", "nan is out of range; allowed: >= 0"},
  };
  for (const Case& c : cases) {
    INFO(c.set);
    CHECK(parse_error(kMinimal, {c.set}) == "--set " + c.set + ": " + c.expect);
  }
}

TEST_CASE("recipe: cross-field checks name the key at fault") {
  struct Case {
    std::string text, expect;
  };
  const std::vector<Case> cases = {
      {kMinimal + "[model.attention]\nn_q = 8\nn_k = 3\n",
       "x.toml:5: model.attention.n_k: 3 does not divide model.attention.n_q = 8"},
      {kMinimal + "[model.attention]\nn_v = 3\n",
       "x.toml:4: model.attention.n_v: 3 does not divide model.attention.n_q = 8"},
      {kMinimal + "[model.attention]\nd_qk = 33\n", "x.toml:4: model.attention.d_qk: 33 is odd"},
      {kMinimal + "[model]\nvocab_size = 100\n",
       "x.toml:4: model.vocab_size: 100 is too small for data.tokenizer = \"byte\""},
      {kMinimal + "[data]\nsources = [{ weight = 2.0 }]\n",
       "x.toml:4: data.sources[0].path: missing or empty"},
      {"[train]\nsteps = 10\ntokens = 1000\n",
       "x.toml:2: train.steps: both train.steps = 10 and train.tokens = 1000 are set"},
      {"[train]\nmicro_batch = 2\n", "x.toml:1: train.steps: neither train.steps nor train.tokens"},
      {kMinimal + "micro_batch = 2\nglobal_batch_tokens = 1000\n[data]\nseq_len = 64\n",
       "x.toml:4: train.global_batch_tokens: 1000 is not a multiple of train.micro_batch * "
       "data.seq_len = 2 * 64 = 128; allowed: a positive multiple of 128"},
      {kMinimal + "global_batch_tokens = 1024\nbatch_ramp_start_tokens = 100\n"
                  "batch_ramp_tokens = 5000\n",
       "x.toml:4: train.batch_ramp_start_tokens: 100 is not a multiple of"},
      {kMinimal + "global_batch_tokens = 1024\nbatch_ramp_start_tokens = 1024\n"
                  "batch_ramp_tokens = 5000\n",
       "x.toml:4: train.batch_ramp_start_tokens: 1024 is not below train.global_batch_tokens"},
      {kMinimal + "global_batch_tokens = 1024\nbatch_ramp_start_tokens = 512\n",
       "x.toml:1: train.batch_ramp_tokens: 0 while train.batch_ramp_start_tokens is set"},
      {kMinimal + "precision = \"bf16\"\ndevice = \"cpu\"\n",
       "x.toml:3: train.precision: \"bf16\" needs the CUDA engine"},
      {kMinimal + "precision = \"fp32\"\ndevice = \"cuda\"\n",
       "x.toml:3: train.precision: \"fp32\" on CUDA"},
      {kMinimal + "[lr_scheduler]\nkind = \"phases\"\n",
       "x.toml:3: lr_scheduler.phases: empty while lr_scheduler.kind = \"phases\""},
      {kMinimal + "[lr_scheduler]\nkind = \"phases\"\n"
                  "phases = [{ fraction = 0.5 }, { fraction = 0.4 }]\n",
       "x.toml:5: lr_scheduler.phases: the fractions sum to 0.9; allowed: a sum of 1"},
      {kMinimal + "[run]\nname = \"\"\n", "x.toml:4: run.name: empty"},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    CHECK(contains(parse_error(c.text), c.expect));
  }
  // Rounded fractions are fine within 1e-6.
  CHECK_NOTHROW(parse_recipe(kMinimal + "[lr_scheduler]\nkind = \"phases\"\nphases = ["
                                        "{ fraction = 0.333333 }, { fraction = 0.333333 }, "
                                        "{ fraction = 0.333334 }]\n",
                             "x.toml"));
}

TEST_CASE("recipe: defaults that depend on other keys are filled in") {
  Recipe r = parse_recipe(kMinimal + "micro_batch = 3\n[run]\nname = \"abc\"\n[data]\nseq_len = 16\n",
                          "x.toml");
  CHECK(r.run.out_dir == "runs/abc");
  CHECK(r.checkpoint.dir == "runs/abc/checkpoints");
  CHECK(r.train.global_batch_tokens == 48);
  Recipe o = parse_recipe(kMinimal, "x.toml", {"run.out_dir=/tmp/r", "train.global_batch_tokens=2048"});
  CHECK(o.checkpoint.dir == "/tmp/r/checkpoints");
  CHECK(o.train.global_batch_tokens == 2048);
  CHECK(contains(o.resolved_toml, "dir = \"/tmp/r/checkpoints\""));
  CHECK(parse_recipe(kMinimal, "x.toml", {"checkpoint.dir=/ck"}).checkpoint.dir == "/ck");
}

TEST_CASE("recipe: TOML syntax errors name the file and line") {
  std::string message = parse_error("[train]\nsteps = 10\nlr = = 3\n");
  CHECK(contains(message, "x.toml:3: TOML syntax error: "));
  CHECK(contains(parse_error("[train]\nsteps = 1\n[train]\n"), "x.toml:3: TOML syntax error"));
}

TEST_CASE("recipe: training needs a data source, sigma info does not") {
  Recipe r = parse_recipe(kMinimal, "x.toml");
  CHECK(r.data.sources.empty());
  CHECK(contains(error_of([&] { validate_for_training(r); }),
                 "x.toml: data.sources: empty; training needs at least one source"));
  Recipe with = parse_recipe(kMinimal, "x.toml", {"data.sources=[{path=\"d\"}]"});
  CHECK_NOTHROW(validate_for_training(with));
}
