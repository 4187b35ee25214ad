package main

/*
#include "fe_php.h"
*/
import "C"

import (
	"fmt"
	"os"
	"unsafe"
)

var levels = [...]string{"off", "error", "warn", "info", "debug", "trace"}

// goLogLine receives the library's log lines (PHP's errors and warnings,
// PHP-FPM's stderr, backend failures). Any thread of the library may call it:
// it only writes one line to stderr.
//
//export goLogLine
func goLogLine(userdata unsafe.Pointer, rec *C.fephp_log_record) {
	str := func(s C.fephp_str) string { return C.GoStringN(s.ptr, C.int(s.len)) }
	level := "?"
	if int(rec.level) < len(levels) {
		level = levels[rec.level]
	}
	line := fmt.Sprintf("fe-php %s %s: %s", level, str(rec.target), str(rec.message))
	if rec.uri.len > 0 {
		line += " | request: " + str(rec.uri)
	}
	fmt.Fprintln(os.Stderr, line)
}
