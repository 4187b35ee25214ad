// A minimal Go host for libfe_php through cgo: create an engine from a config
// file, run one GET per target on the command line, print the responses.
//
//	go build -o fephp-go-demo . && ./fephp-go-demo ../c/demo.toml /hello.php /_health
//
// Build against an installed fe-php with CGO_CFLAGS/CGO_LDFLAGS from
// `pkg-config --cflags --libs fe_php`; by default it uses this checkout.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/debug -Wl,-rpath,${SRCDIR}/../../target/debug -lfe_php
#include <stdlib.h>
#include "fe_php.h"

// goLogLine is exported from log.go; C sees the record as const.
extern void goLogLine(void *userdata, fephp_log_record *record);
static fephp_result set_log_callback(void) {
	return fephp_log_set_callback((fephp_log_callback) goLogLine, NULL, FEPHP_LOG_LEVEL_INFO);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"unsafe"
)

// lastError reads the library's message for the last failure on this thread.
func lastError() error {
	buf := make([]byte, 4096)
	var n C.size_t
	C.fephp_last_error((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
	return errors.New(string(buf[:n]))
}

// cstrings owns C copies of Go strings for one request (cgo forbids handing C
// memory that points into Go memory).
type cstrings []unsafe.Pointer

func (c *cstrings) str(s string) C.fephp_str {
	p := C.CString(s)
	*c = append(*c, unsafe.Pointer(p))
	return C.fephp_str{ptr: p, len: C.size_t(len(s))}
}

func (c *cstrings) free() {
	for _, p := range *c {
		C.free(p)
	}
}

func get(engine *C.fephp_engine, target string) error {
	var cs cstrings
	defer cs.free()

	headers := [][2]string{{"Host", "localhost:8080"}, {"User-Agent", "fephp-go-demo"}}
	size := C.size_t(unsafe.Sizeof(C.fephp_header{})) * C.size_t(len(headers))
	chead := (*[1 << 20]C.fephp_header)(C.malloc(size))[:len(headers):len(headers)]
	defer C.free(unsafe.Pointer(&chead[0]))
	for i, h := range headers {
		chead[i] = C.fephp_header{name: cs.str(h[0]), value: cs.str(h[1])}
	}

	var req C.fephp_request
	req.method = cs.str("GET")
	req.target = cs.str(target)
	req.protocol = cs.str("HTTP/1.1")
	req.headers = &chead[0]
	req.header_count = C.size_t(len(headers))
	req.remote_addr = cs.str("127.0.0.1")
	req.remote_port = 50000
	req.local_addr = cs.str("127.0.0.1")
	req.local_port = 8080

	var resp *C.fephp_response
	if C.fephp_handle_request(engine, &req, &resp) != C.FEPHP_RESULT_OK {
		return lastError()
	}
	defer C.fephp_response_free(resp)

	fmt.Printf("== GET %s: %d\n", target, C.fephp_response_status(resp))
	for i := C.size_t(0); i < C.fephp_response_header_count(resp); i++ {
		var name, value C.fephp_str
		if C.fephp_response_header(resp, i, &name, &value) == C.FEPHP_RESULT_OK {
			fmt.Printf("%s: %s\n", C.GoStringN(name.ptr, C.int(name.len)), C.GoStringN(value.ptr, C.int(value.len)))
		}
	}
	fmt.Println()
	buf := (*C.uint8_t)(C.malloc(16384))
	defer C.free(unsafe.Pointer(buf))
	for {
		var n C.size_t
		if C.fephp_response_body_read(resp, buf, 16384, &n) != C.FEPHP_RESULT_OK {
			return lastError()
		}
		if n == 0 {
			break
		}
		os.Stdout.Write(C.GoBytes(unsafe.Pointer(buf), C.int(n)))
	}
	fmt.Println()
	return nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintf(os.Stderr, "usage: %s CONFIG.toml TARGET...\n", os.Args[0])
		os.Exit(2)
	}
	fmt.Printf("libfe_php %s\n", C.GoString(C.fephp_version()))
	// Before fephp_init, so the configuration's own warnings arrive too.
	if C.set_log_callback() != C.FEPHP_RESULT_OK {
		fmt.Fprintln(os.Stderr, "fephp_log_set_callback:", lastError())
	}
	path := C.CString(os.Args[1])
	defer C.free(unsafe.Pointer(path))
	var engine *C.fephp_engine
	if C.fephp_init(path, nil, &engine) != C.FEPHP_RESULT_OK {
		fmt.Fprintln(os.Stderr, "fephp_init:", lastError())
		os.Exit(1)
	}
	defer C.fephp_engine_free(engine)
	if C.fephp_worker_start(engine) != C.FEPHP_RESULT_OK {
		fmt.Fprintln(os.Stderr, "fephp_worker_start:", lastError())
		os.Exit(1)
	}
	failed := false
	for _, target := range os.Args[2:] {
		if err := get(engine, target); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", target, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
