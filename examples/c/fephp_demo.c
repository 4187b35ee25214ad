/* A minimal C host for libfe_php: create an engine from a config file, run one
 * request per target given on the command line, print each response, free
 * everything.
 *
 *   cc $(pkg-config --cflags --libs fe_php) fephp_demo.c -o fephp_demo
 *   ./fephp_demo fe-php.toml /hello.php /style.css /_health
 */
#include <fe_php.h>

#include <stdio.h>
#include <string.h>

static fephp_str str(const char *s)
{
    fephp_str out = {s, strlen(s)};
    return out;
}

static void print_error(const char *what)
{
    char msg[4096];
    size_t len = 0;
    fephp_last_error(msg, sizeof msg, &len);
    fprintf(stderr, "%s: %s\n", what, msg);
}

/* The library's log lines (PHP's errors and warnings, PHP-FPM's stderr, backend
 * failures): any thread may call this, so it only writes one line to stderr. */
static void log_line(void *userdata, const fephp_log_record *rec)
{
    static const char *levels[] = {"off", "error", "warn", "info", "debug", "trace"};
    (void) userdata;
    fprintf(stderr, "fe-php %s %.*s: %.*s%s%.*s\n", rec->level <= 5 ? levels[rec->level] : "?",
            (int) rec->target.len, rec->target.ptr, (int) rec->message.len, rec->message.ptr,
            rec->uri.len ? " | request: " : "", (int) rec->uri.len, rec->uri.ptr);
}

/* Runs GET `target` and prints the status line, headers and body. */
static int run(const fephp_engine *engine, const char *target)
{
    fephp_header headers[] = {{str("Host"), str("localhost:8080")}, {str("User-Agent"), str("fephp_demo")}};
    fephp_request req;
    memset(&req, 0, sizeof req);
    req.method = str("GET");
    req.target = str(target);
    req.protocol = str("HTTP/1.1");
    req.headers = headers;
    req.header_count = sizeof headers / sizeof headers[0];
    req.remote_addr = str("127.0.0.1");
    req.remote_port = 50000;
    req.local_addr = str("127.0.0.1");
    req.local_port = 8080;

    fephp_backend backend;
    if (fephp_route(engine, req.method, req.target, &backend) != FEPHP_RESULT_OK) {
        print_error(target);
        return 1;
    }
    static const char *names[] = {"internal", "embedded", "fastcgi", "static"};

    fephp_response *resp = NULL;
    if (fephp_handle_request(engine, &req, &resp) != FEPHP_RESULT_OK) {
        print_error(target);
        return 1;
    }
    printf("== GET %s -> %s backend: %u\n", target, backend <= 3 ? names[backend] : "?", fephp_response_status(resp));
    for (size_t i = 0; i < fephp_response_header_count(resp); i++) {
        fephp_str name, value;
        if (fephp_response_header(resp, i, &name, &value) == FEPHP_RESULT_OK) {
            printf("%.*s: %.*s\n", (int) name.len, name.ptr, (int) value.len, value.ptr);
        }
    }
    printf("\n");
    /* The generic reader works for every body kind (bytes, file, stream). */
    uint8_t buf[16384];
    size_t n = 0;
    do {
        if (fephp_response_body_read(resp, buf, sizeof buf, &n) != FEPHP_RESULT_OK) {
            print_error("reading the body");
            break;
        }
        fwrite(buf, 1, n, stdout);
    } while (n > 0);
    printf("\n");
    fephp_response_free(resp);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONFIG.toml TARGET...\n", argv[0]);
        return 2;
    }
    printf("libfe_php %s (header %s)\n", fephp_version(), FEPHP_VERSION);

    /* Before fephp_init, so the configuration's own warnings arrive too. */
    if (fephp_log_set_callback(log_line, NULL, FEPHP_LOG_LEVEL_INFO) != FEPHP_RESULT_OK) {
        print_error("fephp_log_set_callback");
    }

    const fephp_engine *engine = NULL;
    if (fephp_init(argv[1], NULL, &engine) != FEPHP_RESULT_OK) {
        print_error("fephp_init");
        return 1;
    }
    char messages[4096];
    size_t len = 0;
    if (fephp_engine_messages(engine, messages, sizeof messages, &len) == FEPHP_RESULT_OK && len > 0) {
        fprintf(stderr, "%s\n", messages);
    }
    /* This host does not fork: start the per-process part here. */
    if (fephp_worker_start(engine) != FEPHP_RESULT_OK) {
        print_error("fephp_worker_start");
        fephp_engine_free(engine);
        return 1;
    }
    int failures = 0;
    for (int i = 2; i < argc; i++) {
        failures += run(engine, argv[i]);
    }
    fephp_engine_free(engine);
    return failures ? 1 : 0;
}
