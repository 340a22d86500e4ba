// PostgreSQL's synchronous_standby_names policy: whether a setting names a standby, parsed
// as the server parses it.
#pragma once

#include "absl/strings/string_view.h"

namespace ferry::client::pg {

// Whether PostgreSQL's synchronous_standby_names `setting` (its syntax: a list of names,
// `[FIRST|ANY] n (names)`, `*`, double-quoted names) names `application_name`, compared as the
// server compares (case-insensitively), so that commits may wait on that standby's flush
// reports: as one of the synchronous standbys or as a candidate to replace one. A setting this
// cannot parse counts as naming it (the server checked the syntax; waiting is the safe guess).
bool NamesSynchronousStandby(absl::string_view setting, absl::string_view application_name);

}  // namespace ferry::client::pg
