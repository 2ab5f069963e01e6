#include "kernel/selfcheck.h"

unsigned selfcheck_passed, selfcheck_failed;
