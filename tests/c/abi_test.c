/* A C host, compiled against include/fe_php.h and linked to libfe_php.so: inits an
 * engine from a TOML string, routes, serves a static file, reads the health JSON,
 * and frees everything. Run under valgrind by `make test`. */
#define _POSIX_C_SOURCE 200809L
#include "fe_php.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                     \
        }                                                                   \
    } while (0)

static fephp_str S(const char *s) {
    fephp_str out = {s, strlen(s)};
    return out;
}

static const char *header(const fephp_response *resp, const char *name, char *buf, size_t cap) {
    size_t n = fephp_response_header_count(resp);
    for (size_t i = 0; i < n; i++) {
        fephp_str k, v;
        if (fephp_response_header(resp, i, &k, &v) != FEPHP_RESULT_OK) continue;
        if (k.len == strlen(name) && strncasecmp(k.ptr, name, k.len) == 0 && v.len < cap) {
            memcpy(buf, v.ptr, v.len);
            buf[v.len] = 0;
            return buf;
        }
    }
    return NULL;
}

static fephp_request get(const char *target, const fephp_header *headers, size_t count) {
    fephp_request r;
    memset(&r, 0, sizeof r);
    r.method = S("GET");
    r.target = S(target);
    r.protocol = S("HTTP/1.1");
    r.headers = headers;
    r.header_count = count;
    r.remote_addr = S("127.0.0.1");
    r.remote_port = 40000;
    r.local_addr = S("127.0.0.1");
    r.local_port = 8080;
    return r;
}

struct async_result {
    int called;
    fephp_result result;
    fephp_response *response;
};

static void on_response(void *userdata, fephp_result result, fephp_response *response) {
    struct async_result *a = userdata;
    a->called++;
    a->result = result;
    a->response = response;
}

/* Many requests of every kind against an engine with the embedded backend:
 * PHP (GET and POST), static files, health, 404, traversal. */
static void mixed_requests(const fephp_engine *engine, int rounds) {
    fephp_header form[1] = {{S("Content-Type"), S("application/x-www-form-urlencoded")}};
    for (int i = 0; i < rounds; i++) {
        fephp_response *resp = NULL;
        fephp_request req = get("/hello.php", NULL, 0);
        CHECK(fephp_handle_request(engine, &req, &resp) == FEPHP_RESULT_OK);
        CHECK(fephp_response_status(resp) == 200);
        char body[256];
        size_t n = 0, total = 0;
        do {
            CHECK(fephp_response_body_read(resp, (uint8_t *)body + total, sizeof body - 1 - total, &n) == FEPHP_RESULT_OK);
            total += n;
        } while (n > 0 && total < sizeof body - 1);
        body[total] = 0;
        CHECK(strstr(body, "Hello from PHP") != NULL);
        fephp_response_free(resp);

        req = get("/hello.php?x=1", form, 1);
        req.method = S("POST");
        req.body = (const uint8_t *)"a=1&b=2";
        req.body_len = 7;
        CHECK(fephp_handle_request(engine, &req, &resp) == FEPHP_RESULT_OK);
        CHECK(fephp_response_status(resp) == 200);
        fephp_response_free(resp);

        const char *targets[] = {"/css/site.css", "/_health", "/missing.php", "/..%2fx", "/docs"};
        const uint16_t want[] = {200, 200, 404, 400, 301};
        for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
            req = get(targets[t], NULL, 0);
            CHECK(fephp_handle_request(engine, &req, &resp) == FEPHP_RESULT_OK);
            CHECK(fephp_response_status(resp) == want[t]);
            fephp_response_free(resp);
        }
    }
}

static int sigprof_blocked(void) {
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    return sigismember(&mask, SIGPROF) == 1;
}

struct lazy_start {
    const char *toml;
    int ok;
};

/* A host thread with SIGPROF unblocked runs the first PHP request of the process
 * (which starts the PHP thread) without fephp_worker_start: its own signal mask
 * must not change behind its back. */
static void *first_php_request(void *arg) {
    struct lazy_start *l = arg;
    sigset_t prof;
    sigemptyset(&prof);
    sigaddset(&prof, SIGPROF);
    pthread_sigmask(SIG_UNBLOCK, &prof, NULL);
    const fephp_engine *php = NULL;
    if (fephp_init(NULL, l->toml, &php) != FEPHP_RESULT_OK) {
        char msg[4096];
        size_t len = 0;
        fephp_last_error(msg, sizeof msg, &len);
        fprintf(stderr, "fephp_init with PHP failed: %s\n", msg);
        return NULL;
    }
    fephp_response *resp = NULL;
    fephp_request req = get("/hello.php", NULL, 0);
    CHECK(fephp_handle_request(php, &req, &resp) == FEPHP_RESULT_OK);
    CHECK(fephp_response_status(resp) == 200);
    fephp_response_free(resp);
    l->ok = !sigprof_blocked();
    /* fephp_worker_start blocks it, as documented. */
    CHECK(fephp_worker_start(php) == FEPHP_RESULT_OK);
    CHECK(sigprof_blocked());
    fephp_engine_free(php);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s STATIC_ROOT [LIBPHP]\n", argv[0]);
        return 2;
    }
    const char *root = argv[1];
    char toml[2048];
    snprintf(toml, sizeof toml,
             "[backend]\n"
             "default_backend = \"static\"\n"
             "[backend.static_files]\n"
             "enable = true\n"
             "root = \"%s\"\n"
             "[[backend.routing_rules]]\n"
             "pattern = { type = \"suffix\", value = \".css\" }\n"
             "backend = \"static\"\n"
             "priority = 80\n"
             "[php]\n"
             "libphp_path = \"/nonexistent/libphp.so\"\n",
             root);

    CHECK(strlen(fephp_version()) > 0);

    /* A bad configuration: an error code and a message naming the cause. */
    const fephp_engine *bad = NULL;
    CHECK(fephp_init(NULL, "[backend]\ndefault_backend = \"xxx\"\n", &bad) == FEPHP_RESULT_CONFIG_ERROR);
    CHECK(bad == NULL);
    char msg[4096];
    size_t len = 0;
    CHECK(fephp_last_error(msg, sizeof msg, &len) == FEPHP_RESULT_OK);
    CHECK(strstr(msg, "Default backend 'xxx' is not registered") != NULL);
    CHECK(fephp_init(NULL, NULL, NULL) == FEPHP_RESULT_NULL_PARAMETER);

    const fephp_engine *engine = NULL;
    fephp_result r = fephp_init(NULL, toml, &engine);
    if (r != FEPHP_RESULT_OK) {
        fephp_last_error(msg, sizeof msg, &len);
        fprintf(stderr, "fephp_init failed: %s\n", msg);
        return 1;
    }
    CHECK(fephp_worker_start(engine) == FEPHP_RESULT_OK);

    /* Informational lines: libphp is missing here, the seed's message says so. */
    CHECK(fephp_engine_messages(engine, msg, sizeof msg, &len) == FEPHP_RESULT_OK);
    CHECK(strstr(msg, "[i] libphp.so not found at: /nonexistent/libphp.so.") != NULL);
    /* A too-small buffer reports the length needed. */
    char tiny[4];
    CHECK(fephp_engine_messages(engine, tiny, sizeof tiny, &len) == FEPHP_RESULT_BUFFER_TOO_SMALL);
    CHECK(len > sizeof tiny);

    /* What a control API shows and checks (1.4.0): the running configuration as
     * JSON, the runner pools, a candidate checked without an engine. */
    char json[4096];
    CHECK(fephp_engine_config_json(engine, json, sizeof json, &len) == FEPHP_RESULT_OK);
    CHECK(strstr(json, "\"default_backend\":\"static\"") != NULL);
    CHECK(fephp_engine_pools_json(engine, json, sizeof json, &len) == FEPHP_RESULT_OK);
    CHECK(strstr(json, "\"pools\":[") != NULL);
    CHECK(fephp_engine_upstreams_json(engine, json, sizeof json, &len) == FEPHP_RESULT_OK);
    CHECK(strcmp(json, "{\"fastcgi\":[]}") == 0);
    CHECK(fephp_engine_upstream_drain(engine, "default", "127.0.0.1:9000", true) == FEPHP_RESULT_INVALID_ARGUMENT);
    CHECK(fephp_last_error(msg, sizeof msg, &len) == FEPHP_RESULT_OK);
    CHECK(strstr(msg, "no FastCGI upstream is configured") != NULL);
    CHECK(fephp_engine_upstream_drain(engine, NULL, "x", true) == FEPHP_RESULT_NULL_PARAMETER);
    CHECK(fephp_config_check(NULL, toml, msg, sizeof msg, &len) == FEPHP_RESULT_OK);
    CHECK(fephp_config_check("/etc/x.toml", "[backend]\nnope = 1\n", msg, sizeof msg, &len) == FEPHP_RESULT_CONFIG_ERROR);
    CHECK(fephp_last_error(msg, sizeof msg, &len) == FEPHP_RESULT_OK);
    CHECK(strstr(msg, "invalid configuration file /etc/x.toml") != NULL && strstr(msg, "nope") != NULL);
    CHECK(fephp_config_check(NULL, NULL, msg, sizeof msg, &len) == FEPHP_RESULT_INVALID_ARGUMENT);

    /* Routing. */
    fephp_backend backend = FEPHP_BACKEND_EMBEDDED;
    CHECK(fephp_route(engine, S("GET"), S("/css/site.css"), &backend) == FEPHP_RESULT_OK);
    CHECK(backend == FEPHP_BACKEND_STATIC);
    CHECK(fephp_route(engine, S("GET"), S("/_health"), &backend) == FEPHP_RESULT_OK);
    CHECK(backend == FEPHP_BACKEND_INTERNAL);
    CHECK(fephp_route(engine, S("GET"), S("/../etc/passwd"), &backend) == FEPHP_RESULT_BAD_REQUEST);
    CHECK(fephp_route(NULL, S("GET"), S("/"), &backend) == FEPHP_RESULT_NULL_PARAMETER);

    /* A static file, read through the generic body reader. */
    fephp_response *resp = NULL;
    fephp_request req = get("/css/site.css", NULL, 0);
    CHECK(fephp_handle_request(engine, &req, &resp) == FEPHP_RESULT_OK);
    CHECK(fephp_response_status(resp) == 200);
    char hv[256];
    CHECK(header(resp, "Content-Type", hv, sizeof hv) && strcmp(hv, "text/css") == 0);
    CHECK(header(resp, "Cache-Control", hv, sizeof hv) && strcmp(hv, "public, max-age=3600") == 0);
    char etag[128] = "";
    CHECK(header(resp, "ETag", etag, sizeof etag) != NULL);
    /* A small file comes from the engine's memory: a bytes body. */
    CHECK(fephp_response_body_kind(resp) == FEPHP_BODY_KIND_BYTES);
    char body[8192];
    size_t total = 0, n = 0;
    do {
        CHECK(fephp_response_body_read(resp, (uint8_t *)body + total, sizeof body - total - 1, &n) == FEPHP_RESULT_OK);
        total += n;
    } while (n > 0 && total < sizeof body - 1);
    body[total] = '\0';
    CHECK(total > 0 && strstr(body, "font-family") != NULL);
    int fd = -1;
    uint64_t off = 1, flen = 0;
    CHECK(fephp_response_body_file(resp, &fd, &off, &flen) == FEPHP_RESULT_WRONG_BODY_KIND);
    fephp_response_free(resp);

    /* A file over 16 KiB is a file body (fd, offset, length) a host can sendfile. */
    {
        char dir[] = "/tmp/fephp-abi-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char path[256], big_toml[512];
        snprintf(path, sizeof path, "%s/big.txt", dir);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        for (int i = 0; f && i < 20000; i++)
            fputc('a' + i % 26, f);
        if (f)
            fclose(f);
        snprintf(big_toml, sizeof big_toml,
                 "[backend]\ndefault_backend = \"static\"\n"
                 "[backend.static_files]\nenable = true\nroot = \"%s\"\n"
                 "[php]\nlibphp_path = \"/nonexistent/libphp.so\"\n",
                 dir);
        const fephp_engine *files = NULL;
        CHECK(fephp_init(NULL, big_toml, &files) == FEPHP_RESULT_OK);
        fephp_request big = get("/big.txt", NULL, 0);
        fephp_response *br = NULL;
        CHECK(files && fephp_handle_request(files, &big, &br) == FEPHP_RESULT_OK);
        if (br) {
            CHECK(fephp_response_body_kind(br) == FEPHP_BODY_KIND_FILE);
            CHECK(fephp_response_body_file(br, &fd, &off, &flen) == FEPHP_RESULT_OK);
            CHECK(fd >= 0 && off == 0 && flen == 20000);
            static char whole[32768];
            total = 0;
            do {
                CHECK(fephp_response_body_read(br, (uint8_t *)whole + total, sizeof whole - total, &n) == FEPHP_RESULT_OK);
                total += n;
            } while (n > 0 && total < sizeof whole);
            CHECK(total == flen && whole[0] == 'a' && whole[19999] == 'a' + 19999 % 26);
            const uint8_t *bp = NULL;
            CHECK(fephp_response_body_bytes(br, &bp, &n) == FEPHP_RESULT_WRONG_BODY_KIND);
            fephp_response_free(br);
        }
        if (files)
            fephp_engine_free(files);
        unlink(path);
        rmdir(dir);
    }

    /* Conditional request through the async path: 304, completed inline. */
    fephp_header h[1] = {{S("If-None-Match"), S(etag)}};
    req = get("/css/site.css", h, 1);
    struct async_result a = {0, FEPHP_RESULT_PANIC, NULL};
    CHECK(fephp_handle_request_async(engine, &req, on_response, &a) == FEPHP_RESULT_OK);
    CHECK(a.called == 1 && a.result == FEPHP_RESULT_OK && a.response != NULL);
    CHECK(fephp_response_status(a.response) == 304);
    CHECK(fephp_response_body_kind(a.response) == FEPHP_BODY_KIND_EMPTY);
    fephp_response_free(a.response);

    /* Traversal is a 400 response, not an error code. */
    req = get("/..%2f..%2fetc/passwd", NULL, 0);
    CHECK(fephp_handle_request(engine, &req, &resp) == FEPHP_RESULT_OK);
    CHECK(fephp_response_status(resp) == 400);
    fephp_response_free(resp);

    /* Health JSON. */
    uint16_t status = 0;
    CHECK(fephp_health(engine, msg, sizeof msg, &len, &status) == FEPHP_RESULT_OK);
    CHECK(status == 200);
    CHECK(strstr(msg, "\"status\": \"healthy\"") != NULL);
    CHECK(strstr(msg, "Static backend is healthy") != NULL);

    CHECK(fephp_result_message(FEPHP_RESULT_BAD_REQUEST, msg, sizeof msg, &len) == FEPHP_RESULT_OK);
    CHECK(len > 0);

    fephp_engine_free(engine);

    /* With libphp: an engine with the embedded backend, then a reload (a new
     * engine from the same configuration, the old one freed), each serving a mixed
     * sequence of requests. */
    if (argc == 3) {
        /* A libphp that fails to load is not remembered: the right path works
         * on the next fephp_init in the same process. */
        snprintf(toml, sizeof toml,
                 "[backend]\n"
                 "default_backend = \"embedded\"\n"
                 "[backend.static_files]\n"
                 "enable = true\n"
                 "root = \"%s\"\n"
                 "[php]\n"
                 "libphp_path = \"/etc/passwd\"\n",
                 root);
        const fephp_engine *wrong = NULL;
        CHECK(fephp_init(NULL, toml, &wrong) == FEPHP_RESULT_CONFIG_ERROR);
        CHECK(wrong == NULL);
        CHECK(fephp_last_error(msg, sizeof msg, &len) == FEPHP_RESULT_OK);
        CHECK(strstr(msg, "cannot load libphp from /etc/passwd") != NULL);

        snprintf(toml, sizeof toml,
                 "[backend]\n"
                 "default_backend = \"embedded\"\n"
                 "[backend.static_files]\n"
                 "enable = true\n"
                 "root = \"%s\"\n"
                 "[php]\n"
                 "libphp_path = \"%s\"\n",
                 root, argv[2]);
        struct lazy_start lazy = {toml, 0};
        pthread_t t;
        CHECK(pthread_create(&t, NULL, first_php_request, &lazy) == 0);
        pthread_join(t, NULL);
        if (!lazy.ok) {
            fprintf(stderr, "the first PHP request changed its calling thread's signal mask (SIGPROF blocked)\n");
            failures++;
        }

        snprintf(toml, sizeof toml,
                 "[backend]\n"
                 "default_backend = \"embedded\"\n"
                 "[backend.static_files]\n"
                 "enable = true\n"
                 "root = \"%s\"\n"
                 "[php]\n"
                 "libphp_path = \"%s\"\n",
                 root, argv[2]);
        for (int generation = 0; generation < 2; generation++) {
            const fephp_engine *php = NULL;
            r = fephp_init(NULL, toml, &php);
            if (r != FEPHP_RESULT_OK) {
                fephp_last_error(msg, sizeof msg, &len);
                fprintf(stderr, "fephp_init with PHP failed: %s\n", msg);
                return 1;
            }
            CHECK(fephp_worker_start(php) == FEPHP_RESULT_OK);
            mixed_requests(php, 25);
            CHECK(fephp_health(php, msg, sizeof msg, &len, &status) == FEPHP_RESULT_OK);
            CHECK(strstr(msg, "Embedded backend is healthy") != NULL);
            fephp_engine_free(php);
        }
    }
    fephp_engine_free(NULL);
    fephp_response_free(NULL);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("c abi test: ok\n");
    return 0;
}
