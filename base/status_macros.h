// Status plumbing shared by every Orrery library: early-return macros over absl::Status.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ORRERY_CONCAT_INNER_(a, b) a##b
#define ORRERY_CONCAT_(a, b) ORRERY_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status orrery_status_ = (expr);            \
    if (!orrery_status_.ok()) return orrery_status_;   \
  } while (0)

// `lhs = value of expr` when expr (an absl::StatusOr<T>) is OK; returns its status otherwise.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(ORRERY_CONCAT_(orrery_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()
