// The dependency direction of docs/design.md, enforced: every folder is one library whose
// CMakeLists.txt names the folders it may use (written to layers.txt at configure time), and
// every #include of a ferry header must stay inside those folders, transitively. A new
// upward edge or a cycle fails here with the file, the line and the rule it breaks.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ferry {
namespace {

namespace fs = std::filesystem;

struct Layers {
  std::map<std::string, std::string> folder_of;             // target -> folder
  std::map<std::string, std::vector<std::string>> uses;     // folder -> folders it names
};

Layers ReadLayers() {
  Layers l;
  std::ifstream in(FERRY_LAYERS_FILE);
  EXPECT_TRUE(in) << FERRY_LAYERS_FILE << " is missing: configure with CMake first";
  std::vector<std::vector<std::string>> lines;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string s; words >> s;) w.push_back(s);
    if (w.size() < 2) continue;
    l.folder_of[w[0]] = w[1];
    lines.push_back(w);
  }
  for (const auto& w : lines) {
    auto& uses = l.uses[w[1]];
    for (size_t i = 2; i < w.size(); ++i) {
      EXPECT_TRUE(l.folder_of.count(w[i])) << w[0] << " uses unknown target " << w[i];
      if (l.folder_of.count(w[i])) uses.push_back(l.folder_of[w[i]]);
    }
  }
  return l;
}

// Every folder `folder` may reach through the table; an edge back to `folder` is a cycle.
std::set<std::string> Reachable(const Layers& l, const std::string& folder) {
  std::set<std::string> seen;
  std::vector<std::string> todo = {folder};
  while (!todo.empty()) {
    const std::string f = todo.back();
    todo.pop_back();
    auto it = l.uses.find(f);
    if (it == l.uses.end()) continue;
    for (const std::string& u : it->second) {
      if (seen.insert(u).second) todo.push_back(u);
    }
  }
  return seen;
}

// The folder of the table a repository path belongs to: the longest matching prefix.
std::string FolderOf(const Layers& l, const std::string& path) {
  std::string best;
  for (const auto& [folder, uses] : l.uses) {
    if (path.rfind(folder + "/", 0) == 0 && folder.size() > best.size()) best = folder;
  }
  return best;
}

TEST(LayeringTest, TheFolderTableHasNoCycles) {
  const Layers l = ReadLayers();
  ASSERT_GE(l.uses.size(), 10u) << "layers.txt lists too few folders";
  for (const auto& [folder, uses] : l.uses) {
    EXPECT_FALSE(Reachable(l, folder).count(folder)) << folder << " reaches itself through its uses";
  }
}

TEST(LayeringTest, EveryIncludeStaysInsideTheFoldersItsLibraryMayUse) {
  const Layers l = ReadLayers();
  std::set<std::string> top;  // first components of ferry's own include paths
  for (const auto& [folder, uses] : l.uses) top.insert(folder.substr(0, folder.find('/')));
  top.insert("tests");

  const std::regex include_re(R"re(^\s*#\s*include\s+"([^"]+)")re");
  const fs::path root = FERRY_SOURCE_DIR;
  int files = 0;
  std::vector<std::string> broken;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const std::string rel = fs::relative(it->path(), root).string();
    if (it->is_directory() && (rel.rfind("build", 0) == 0 || rel[0] == '.' || rel == "tests")) {
      it.disable_recursion_pending();  // build trees, .git; tests may use everything
      continue;
    }
    const std::string ext = it->path().extension().string();
    if (!it->is_regular_file() || (ext != ".cc" && ext != ".h")) continue;
    const std::string folder = FolderOf(l, rel);
    if (folder.empty()) {
      broken.push_back(rel + ": in no folder of the table (add the folder to CMake with ferry_library)");
      continue;
    }
    const std::set<std::string> may = Reachable(l, folder);
    ++files;
    std::ifstream in(it->path());
    int line_no = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_no;
      std::smatch m;
      if (!std::regex_search(line, m, include_re)) continue;
      const std::string inc = m[1];
      if (!top.count(inc.substr(0, inc.find('/')))) continue;  // a library's header
      const std::string target = FolderOf(l, inc);
      if (target == folder || may.count(target)) continue;
      broken.push_back(rel + ":" + std::to_string(line_no) + ": includes " + inc + ", but " + folder +
                       "/ may not use " + (target.empty() ? inc : target + "/"));
    }
  }
  EXPECT_GT(files, 100) << "scanned too few files under " << root;
  for (const std::string& b : broken) ADD_FAILURE() << b;
}

}  // namespace
}  // namespace ferry
