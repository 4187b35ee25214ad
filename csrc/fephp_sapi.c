/* fe-php's PHP SAPI: the thin C layer between PHP and the Rust engine.
 *
 * Only the SAPI lives here: the sapi_module_struct, callbacks that forward to the
 * engine, and zend_try so that a bailout (longjmp) never crosses Rust frames. Policy
 * (which script, which $_SERVER values, what the response is) stays in Rust.
 *
 * Invariants:
 * - Runs on one thread per process at a time (NTS PHP).
 * - Engine callbacks return before PHP goes on; PHP may longjmp only after they
 *   have returned, so only C frames are ever unwound.
 * - SG(server_context) holds the current request (non-NULL during a request). */
#define _GNU_SOURCE /* memrchr, as PHP's own build has it */
#include "fephp_sapi.h"

#include "php.h"
#include "SAPI.h"
#include "php_main.h"
#include "php_variables.h"
#include "ext/standard/head.h"
#include "main/php_output.h"
#include "main/php_open_temporary_file.h"
#include "zend_signal.h"
#include "zend_modules.h"

#include "fephp_shim.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

fephp_sapi_callbacks fephp_engine;
const fephp_sapi_request *fephp_current;
int fephp_finished;

/* The working directory: the directory of the last script run. Scripts run in
 * their own directory, as under php-fpm; consecutive requests for scripts in one
 * directory then cost no chdir/getcwd at all (PHP would chdir there and back). */
static char current_dir[MAXPATHLEN];

/* PHP's own chdir(), wrapped so that a script moving away is noticed. */
static zif_handler php_chdir_handler;

static ZEND_NAMED_FUNCTION(fephp_chdir)
{
    current_dir[0] = '\0';
    php_chdir_handler(INTERNAL_FUNCTION_PARAM_PASSTHRU);
}

/* Moves the process into the directory of `script` unless it is there already. */
void fephp_enter_script_dir(const char *script)
{
    const char *slash = strrchr(script, '/');
    size_t len = slash ? (size_t) (slash - script) : 0;
    if (len == 0) {
        len = 1; /* "/x.php" or no slash: the root */
    }
    if (len >= sizeof(current_dir)) {
        current_dir[0] = '\0';
        return;
    }
    if (strncmp(current_dir, script, len) == 0 && current_dir[len] == '\0') {
        return;
    }
    memcpy(current_dir, slash ? script : "/", len);
    current_dir[len] = '\0';
    if (chdir(current_dir) != 0) {
        current_dir[0] = '\0';
    }
}

static size_t sapi_fephp_ub_write(const char *str, size_t len)
{
    if (fephp_finished || !SG(server_context)) {
        return len; /* after fastcgi_finish_request output goes nowhere, as in FPM */
    }
    size_t taken = fephp_engine.write(SG(server_context), str, len);
    if (taken == 0 && len > 0) {
        /* The client has gone: PHP marks the connection aborted and, unless
         * ignore_user_abort is set, bails out (only C frames are on the stack). */
        php_handle_aborted_connection();
    }
    return taken;
}

static void sapi_fephp_flush(void *server_context)
{
    if (server_context && !fephp_finished) {
        /* flush() means the headers are final too. */
        if (!SG(headers_sent)) {
            sapi_send_headers();
        }
        fephp_engine.flush(server_context);
    }
}

static int sapi_fephp_send_headers(sapi_headers_struct *headers)
{
    void *ctx = SG(server_context);
    if (!ctx || fephp_finished) {
        return SAPI_HEADER_SENT_SUCCESSFULLY;
    }
    zend_llist_position pos;
    sapi_header_struct *h = (sapi_header_struct *) zend_llist_get_first_ex(&headers->headers, &pos);
    while (h) {
        fephp_engine.header(ctx, h->header, h->header_len);
        h = (sapi_header_struct *) zend_llist_get_next_ex(&headers->headers, &pos);
    }
    fephp_engine.headers_done(ctx, headers->http_response_code ? headers->http_response_code : 200);
    return SAPI_HEADER_SENT_SUCCESSFULLY;
}

static size_t sapi_fephp_read_post(char *buf, size_t count)
{
    if (!SG(server_context)) {
        return 0;
    }
    return fephp_engine.read_body(SG(server_context), buf, count);
}

static char *sapi_fephp_read_cookies(void)
{
    return fephp_current ? (char *) fephp_current->cookie : NULL;
}

static void sapi_fephp_register_variables(zval *track_vars_array)
{
    if (!fephp_current) {
        return;
    }
    for (size_t i = 0; i < fephp_current->var_count; i++) {
        const fephp_sapi_pair *v = &fephp_current->vars[i];
        /* Names are NUL-terminated by the engine. */
        php_register_variable_safe((char *) v->name, (char *) v->value, v->value_len, track_vars_array);
    }
}

static void sapi_fephp_log_message(const char *message, int syslog_type)
{
    if (fephp_engine.log) {
        fephp_engine.log(SG(server_context), message, syslog_type);
    }
}

static char *sapi_fephp_getenv(const char *name, size_t name_len)
{
    (void) name;
    (void) name_len;
    return NULL;
}

static int sapi_fephp_startup_cb(sapi_module_struct *module)
{
    return php_module_startup(module, NULL);
}

static int sapi_fephp_deactivate(void)
{
    return SUCCESS;
}

/* getallheaders() / apache_request_headers(), as FPM provides them. */
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_fephp_getallheaders, 0, 0, IS_ARRAY, 0)
ZEND_END_ARG_INFO()

PHP_FUNCTION(apache_request_headers)
{
    ZEND_PARSE_PARAMETERS_NONE();
    array_init(return_value);
    if (!fephp_current) {
        return;
    }
    for (size_t i = 0; i < fephp_current->header_count; i++) {
        const fephp_sapi_pair *h = &fephp_current->headers[i];
        add_assoc_stringl_ex(return_value, h->name, h->name_len, (char *) h->value, h->value_len);
    }
}

/* fastcgi_finish_request(): end the response now, keep running the script. */
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_fephp_finish_request, 0, 0, _IS_BOOL, 0)
ZEND_END_ARG_INFO()

PHP_FUNCTION(fastcgi_finish_request)
{
    ZEND_PARSE_PARAMETERS_NONE();
    if (fephp_finished || !SG(server_context)) {
        RETURN_FALSE;
    }
    php_output_end_all();
    php_header();
    fephp_engine.finish(SG(server_context));
    fephp_finished = 1;
    RETURN_TRUE;
}

/* Worker mode's functions (fephp_worker.c). */
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_fephp_handle_request, 0, 1, _IS_BOOL, 0)
    ZEND_ARG_TYPE_INFO(0, callback, IS_CALLABLE, 0)
ZEND_END_ARG_INFO()

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_fephp_headers_send, 0, 0, IS_LONG, 0)
    ZEND_ARG_TYPE_INFO_WITH_DEFAULT_VALUE(0, status, IS_LONG, 0, "200")
ZEND_END_ARG_INFO()

static const zend_function_entry fephp_functions[] = {
    ZEND_FE(apache_request_headers, arginfo_fephp_getallheaders)
    ZEND_FALIAS(getallheaders, apache_request_headers, arginfo_fephp_getallheaders)
    ZEND_FE(fastcgi_finish_request, arginfo_fephp_finish_request)
    ZEND_FALIAS(frankenphp_finish_request, fastcgi_finish_request, arginfo_fephp_finish_request)
    ZEND_FE(fephp_handle_request, arginfo_fephp_handle_request)
    ZEND_FALIAS(frankenphp_handle_request, fephp_handle_request, arginfo_fephp_handle_request)
    ZEND_FE(headers_send, arginfo_fephp_headers_send)
    ZEND_FE_END
};

static sapi_module_struct fephp_module = {
    "fpm-fcgi",                    /* name: set at startup (see fephp_sapi_startup) */
    "fe-php",                      /* pretty name */
    sapi_fephp_startup_cb,         /* startup */
    php_module_shutdown_wrapper,   /* shutdown */
    NULL,                          /* activate */
    sapi_fephp_deactivate,         /* deactivate */
    sapi_fephp_ub_write,           /* unbuffered write */
    sapi_fephp_flush,              /* flush */
    NULL,                          /* get uid */
    sapi_fephp_getenv,             /* getenv */
    php_error,                     /* error handler */
    NULL,                          /* header handler */
    sapi_fephp_send_headers,       /* send headers */
    NULL,                          /* send header (unused: send_headers does it all) */
    sapi_fephp_read_post,          /* read POST data */
    sapi_fephp_read_cookies,       /* read cookies */
    sapi_fephp_register_variables, /* register server variables */
    sapi_fephp_log_message,        /* log message */
    NULL,                          /* get request time */
    NULL,                          /* terminate process */
    STANDARD_SAPI_MODULE_PROPERTIES
};

int fephp_sapi_startup(const fephp_sapi_callbacks *callbacks, const char *sapi_name, const char *ini_entries,
                       char *err, size_t err_len)
{
    fephp_engine = *callbacks;
#if defined(SIGPIPE) && defined(SIG_IGN)
    signal(SIGPIPE, SIG_IGN); /* a closed client socket must not kill the process */
#endif
    zend_signal_startup();
    fephp_module.name = (char *) sapi_name;
    sapi_startup(&fephp_module);
    /* PHP keeps and frees this pointer only at shutdown; it must stay allocated. */
    fephp_module.ini_entries = ini_entries ? strdup(ini_entries) : NULL;
    fephp_module.additional_functions = fephp_functions;
    fephp_module.phpinfo_as_text = 0;
    if (fephp_module.startup(&fephp_module) == FAILURE) {
        snprintf(err, err_len, "php_module_startup failed (see the lines PHP logged above)");
        sapi_shutdown();
        return -1;
    }
    /* Zend signals would re-install deferring handlers for SIGTERM, SIGINT, SIGHUP,
     * SIGQUIT, SIGUSR1/2 and SIGPROF on every request (14 sigaction calls) and chain
     * to the host's; the host owns those signals, so only the handlers PHP asks for
     * itself (the SIGPROF time limit) are installed, once. */
    SIGG(reset) = 0;
    /* fephp_sapi_execute enters the script's directory itself (fephp_enter_script_dir). */
    SG(options) |= SAPI_OPTION_NO_CHDIR;
    zend_function *chdir_fn = zend_hash_str_find_ptr(CG(function_table), "chdir", sizeof("chdir") - 1);
    if (chdir_fn && chdir_fn->type == ZEND_INTERNAL_FUNCTION) {
        php_chdir_handler = chdir_fn->internal_function.handler;
        chdir_fn->internal_function.handler = fephp_chdir;
    }
    return 0;
}

/* $_FILES error codes (PHP's UPLOAD_ERR_* constants). */
#define FEPHP_UPLOAD_ERR_NO_TMP_DIR 6
#define FEPHP_UPLOAD_ERR_CANT_WRITE 7

/* Whether an `error` entry of $_FILES (an int, or nested arrays of them for
 * `name[]` fields) says a file could not be stored. */
static int upload_error_in(zval *err)
{
    if (Z_TYPE_P(err) == IS_LONG) {
        return Z_LVAL_P(err) == FEPHP_UPLOAD_ERR_NO_TMP_DIR || Z_LVAL_P(err) == FEPHP_UPLOAD_ERR_CANT_WRITE;
    }
    if (Z_TYPE_P(err) == IS_ARRAY) {
        zval *v;
        ZEND_HASH_FOREACH_VAL(Z_ARRVAL_P(err), v) {
            if (upload_error_in(v)) {
                return 1;
            }
        } ZEND_HASH_FOREACH_END();
    }
    return 0;
}

/* PHP parsed a multipart body at request startup: did it fail to write a file? */
static int upload_not_stored(void)
{
    zval *files = &PG(http_globals)[TRACK_VARS_FILES];
    if (Z_TYPE_P(files) != IS_ARRAY) {
        return 0;
    }
    zval *entry;
    ZEND_HASH_FOREACH_VAL(Z_ARRVAL_P(files), entry) {
        if (Z_TYPE_P(entry) == IS_ARRAY) {
            zval *err = zend_hash_str_find(Z_ARRVAL_P(entry), "error", sizeof("error") - 1);
            if (err && upload_error_in(err)) {
                return 1;
            }
        }
    } ZEND_HASH_FOREACH_END();
    return 0;
}

/* PHP keeps a body past 16 KiB in a temporary file; when that cannot be written
 * it discards the whole body ("POST data can't be buffered") and would run the
 * script with none. */
static int body_not_stored(void)
{
    php_stream *body = SG(request_info).request_body;
    if (!body || SG(read_post_bytes) <= 0) {
        return 0;
    }
    zend_off_t at = php_stream_tell(body);
    php_stream_seek(body, 0, SEEK_END);
    zend_off_t size = php_stream_tell(body);
    php_stream_seek(body, at, SEEK_SET);
    return size < SG(read_post_bytes);
}

/* Where PHP puts uploads and large bodies: upload_tmp_dir, else the system's. */
static const char *upload_dir(void)
{
    return PG(upload_tmp_dir) && *PG(upload_tmp_dir) ? PG(upload_tmp_dir) : php_get_temporary_directory();
}

void fephp_bind_request(const fephp_sapi_request *req)
{
    fephp_current = req;
    fephp_finished = 0;

    SG(server_context) = req->ctx;
    SG(request_info).request_method = req->method;
    SG(request_info).query_string = (char *) req->query_string;
    SG(request_info).request_uri = (char *) req->request_uri;
    SG(request_info).path_translated = (char *) req->script_filename;
    SG(request_info).content_type = req->content_type;
    SG(request_info).content_length = req->content_length;
    SG(request_info).proto_num = req->proto_num;
    SG(request_info).headers_only = req->headers_only;
    SG(sapi_headers).http_response_code = 200;

    if (req->authorization) {
        php_handle_auth_data(req->authorization);
    } else {
        SG(request_info).auth_user = SG(request_info).auth_password = SG(request_info).auth_digest = NULL;
    }
}

int fephp_sapi_execute(const fephp_sapi_request *req)
{
    int rc = 0;
    fephp_bind_request(req);
    fephp_enter_script_dir(req->script_filename);

    if (php_request_startup() == FAILURE) {
        SG(server_context) = NULL;
        fephp_current = NULL;
        return -1;
    }

    const char *not_stored = upload_not_stored() ? "an uploaded file" : body_not_stored() ? "the request body" : NULL;
    if (not_stored) {
        fephp_engine.storage_failed(req->ctx, not_stored, upload_dir());
    } else {
        zend_first_try {
            zend_file_handle file;
            zend_stream_init_filename(&file, req->script_filename);
            php_execute_script(&file);
            zend_destroy_file_handle(&file);
        } zend_catch {
            /* exit(), fatal errors and aborted connections end here; the response
             * (status 500 for fatals, set by PHP) is completed by the shutdown below. */
        } zend_end_try();
    }

    zend_try {
        php_request_shutdown(NULL);
    } zend_catch {
        rc = 1;
    } zend_end_try();

    SG(server_context) = NULL;
    fephp_current = NULL;
    return rc;
}

void fephp_sapi_shutdown(void)
{
    php_module_shutdown();
    sapi_shutdown();
}

const char *fephp_sapi_php_version(void)
{
    return PHP_VERSION;
}

const char *fephp_sapi_build_id(void)
{
    return ZEND_MODULE_BUILD_ID;
}

/* Appends `len` bytes of `text` to buf at *at (cap bytes), truncating. */
static void bt_put(char *buf, size_t cap, size_t *at, const char *text, size_t len)
{
    if (*at >= cap) {
        return;
    }
    if (len > cap - *at) {
        len = cap - *at;
    }
    memcpy(buf + *at, text, len);
    *at += len;
}

static void bt_num(char *buf, size_t cap, size_t *at, unsigned long n)
{
    char digits[24];
    size_t i = sizeof(digits);
    do {
        digits[--i] = (char) ('0' + n % 10);
        n /= 10;
    } while (n && i);
    bt_put(buf, cap, at, digits + i, sizeof(digits) - i);
}

size_t fephp_sapi_backtrace(char *buf, size_t cap)
{
    size_t at = 0;
    unsigned long depth = 0;
    /* Only reads: the frames belong to the interrupted script, which does not
     * run while this handler does (same thread or a stopped one). */
    zend_execute_data *ex = EG(current_execute_data);
    while (ex && depth < 64) {
        zend_function *f = ex->func;
        if (f) {
            bt_put(buf, cap, &at, "#", 1);
            bt_num(buf, cap, &at, depth++);
            bt_put(buf, cap, &at, " ", 1);
            if (f->common.scope && f->common.scope->name) {
                bt_put(buf, cap, &at, ZSTR_VAL(f->common.scope->name), ZSTR_LEN(f->common.scope->name));
                bt_put(buf, cap, &at, "::", 2);
            }
            if (f->common.function_name) {
                bt_put(buf, cap, &at, ZSTR_VAL(f->common.function_name), ZSTR_LEN(f->common.function_name));
                bt_put(buf, cap, &at, "()", 2);
            } else {
                bt_put(buf, cap, &at, "{main}", 6);
            }
            if (ZEND_USER_CODE(f->type) && f->op_array.filename) {
                bt_put(buf, cap, &at, " ", 1);
                bt_put(buf, cap, &at, ZSTR_VAL(f->op_array.filename), ZSTR_LEN(f->op_array.filename));
                if (ex->opline) {
                    bt_put(buf, cap, &at, ":", 1);
                    bt_num(buf, cap, &at, ex->opline->lineno);
                }
            }
            bt_put(buf, cap, &at, "\n", 1);
        }
        ex = ex->prev_execute_data;
    }
    return at;
}

int fephp_sapi_ini_set(const char *name, size_t name_len, const char *value, size_t value_len)
{
    zend_ini_entry *entry = zend_hash_str_find_ptr(EG(ini_directives), name, name_len);
    if (!entry) {
        return -1;
    }
    /* The directive's master value changes (not a per-request change that
     * request shutdown would undo): persistent, like php.ini's own. */
    zend_string *v = zend_string_init(value, value_len, 1);
    if (entry->on_modify
        && entry->on_modify(entry, v, entry->mh_arg1, entry->mh_arg2, entry->mh_arg3,
                            ZEND_INI_STAGE_STARTUP) != SUCCESS) {
        zend_string_release_ex(v, 1);
        return -2;
    }
    if (entry->value) {
        zend_string_release_ex(entry->value, 1);
    }
    entry->value = v;
    return 0;
}
