/* Worker mode: one PHP request (the worker script) that serves many jobs.
 *
 * A runner of a worker pool runs its worker script once. The script boots the
 * application and loops on frankenphp_handle_request($handler) (also named
 * fephp_handle_request). Each call ends the request state of what ran before (the
 * script's boot, or the previous job), asks the engine for the next job (the
 * engine blocks in Rust and never calls into PHP), gives PHP that job's request
 * state and calls $handler. What the application keeps (objects, statics, open
 * connections, declared classes) lives on; what a request owns is reset:
 *   - $_GET, $_POST, $_COOKIE, $_FILES (and the uploaded temp files), $_SERVER,
 *     $_REQUEST, $_SESSION and the session module's state (user save handlers
 *     stay registered);
 *   - output buffers (output_buffering / output_handler as at startup), response
 *     headers and status, fastcgi_finish_request();
 *   - php://input and the other temporary streams nobody holds;
 *   - the time limit (re-armed from php.ini's max_execution_time), memory_limit,
 *     ignore_user_abort (on, as a worker must outlive its clients);
 *   - the filter module's request state, and stat()'s cache;
 *   - shutdown functions registered during a job run when that job ends; those
 *     the script registered while booting run when it ends.
 * $_ENV, putenv() and ini_set() of other directives are kept.
 *
 * Invariants:
 * - PHP runs on one thread (NTS); the engine's callbacks return before PHP goes
 *   on and never call back into PHP.
 * - While a job is bound (in_job), SG(server_context) is its ctx and
 *   fephp_current its request; otherwise they are the worker script's own.
 * - A bailout inside $handler (fatal error, exit(), time limit, aborted client
 *   without ignore_user_abort) unwinds C frames only, up to fephp_sapi_worker's
 *   zend_first_try. The job is still bound there: php_request_shutdown completes
 *   its response, then job_done is called and the worker script has ended. */
#define _GNU_SOURCE
#include "php.h"
#include "SAPI.h"
#include "php_main.h"
#include "php_variables.h"
#include "ext/standard/head.h"
#include "ext/standard/basic_functions.h"
#include "ext/standard/php_filestat.h"
#include "ext/session/php_session.h"
#include "ext/spl/spl_exceptions.h"
#include "main/php_output.h"
#include "zend_exceptions.h"

#include "fephp_shim.h"

#include <stdlib.h>

/* The worker script's own request while it runs; NULL outside worker mode. */
static const fephp_sapi_request *worker;

/* The job being handled, as next_job filled it. */
static fephp_sapi_request job;
static int in_job;

/* The script's boot (everything before its first handle_request) has ended. */
static int booted;

/* PHP has request state (between request_begin or request startup and
 * request_end). Code the script runs between two jobs has none: its output
 * goes nowhere. */
static int state_active;

/* Shutdown functions the worker script registered while booting, kept aside
 * while jobs run (a job's own run when the job ends). */
static HashTable *boot_shutdown_functions;

/* max_execution_time as php.ini (or the pool) set it, whatever set_time_limit()
 * or ini_set() did since. */
static zend_long configured_time_limit(void)
{
    zend_ini_entry *e =
        zend_hash_str_find_ptr(EG(ini_directives), "max_execution_time", sizeof("max_execution_time") - 1);
    if (!e) {
        return 0;
    }
    zend_string *v = e->modified && e->orig_value ? e->orig_value : e->value;
    return v ? ZEND_STRTOL(ZSTR_VAL(v), NULL, 10) : 0;
}

/* Puts directive `name` back to its php.ini (or pool) value if a request
 * changed it (ini_set(), set_time_limit(), ignore_user_abort()). */
static void restore_ini(const char *name)
{
    zend_string *key = zend_string_init(name, strlen(name), 0);
    zend_try {
        zend_restore_ini_entry(key, ZEND_INI_STAGE_RUNTIME);
    } zend_end_try();
    zend_string_release_ex(key, 0);
}

/* Frees the temporary streams (php://input's copy of the body, php://temp) that
 * no PHP value holds any more: request shutdown would, and a worker's request
 * never shuts down between jobs. */
static void release_temporary_streams(void)
{
    int stream_type = php_file_le_stream();
    zend_resource *res;
    ZEND_HASH_FOREACH_PTR(&EG(regular_list), res) {
        if (res && res->type == stream_type) {
            php_stream *s = (php_stream *) res->ptr;
            if (s && s->ops == &php_stream_temp_ops && !s->__exposed && GC_REFCOUNT(res) == 1) {
                zend_list_delete(res);
            }
        }
    } ZEND_HASH_FOREACH_END();
}

/* Runs module `name`'s RINIT (start != 0) or RSHUTDOWN, when it has one. */
static void module_request(const char *name, int start)
{
    zend_module_entry *m = zend_hash_str_find_ptr(&module_registry, name, strlen(name));
    if (!m) {
        return;
    }
    if (start && m->request_startup_func) {
        m->request_startup_func(m->type, m->module_number);
    } else if (!start && m->request_shutdown_func) {
        m->request_shutdown_func(m->type, m->module_number);
    }
}

/* Ends the session of the request that ends: written and closed as request
 * shutdown would, its id and data dropped; the save handler (a user one
 * included) stays for the next job. */
static void end_session(void)
{
    if (PS(session_status) == php_session_active) {
        zend_try {
            php_session_flush(1);
        } zend_end_try();
    }
    if (!Z_ISUNDEF(PS(http_session_vars))) {
        zval_ptr_dtor(&PS(http_session_vars));
        ZVAL_UNDEF(&PS(http_session_vars));
    }
    if (PS(mod) && (PS(mod_data) || PS(mod_user_implemented))) {
        zend_try {
            PS(mod)->s_close(&PS(mod_data));
        } zend_end_try();
    }
    if (PS(id)) {
        zend_string_release_ex(PS(id), 0);
        PS(id) = NULL;
    }
    if (PS(session_vars)) {
        zend_string_release_ex(PS(session_vars), 0);
        PS(session_vars) = NULL;
    }
    PS(session_status) = php_session_none;
    PS(in_save_handler) = 0;
    PS(set_handler) = 0;
    PS(mod_data) = NULL;
    PS(mod_user_is_open) = 0;
    PS(define_sid) = 1;
    /* $_SESSION is a plain global pointing at the data just dropped. */
    zend_hash_str_del(&EG(symbol_table), "_SESSION", sizeof("_SESSION") - 1);
}

/* Rebuilds the request's superglobals from the bound request, as request
 * startup does (php_hash_environment), on a running request. $_ENV stays. */
static void import_superglobals(void)
{
    zval *files = &PG(http_globals)[TRACK_VARS_FILES];
    zval_ptr_dtor_nogc(files);
    ZVAL_UNDEF(files);

    zend_string *env = ZSTR_KNOWN(ZEND_STR_AUTOGLOBAL_ENV);
    zend_string *server = ZSTR_KNOWN(ZEND_STR_AUTOGLOBAL_SERVER);
    zend_string *request = ZSTR_KNOWN(ZEND_STR_AUTOGLOBAL_REQUEST);
    zend_auto_global *ag;
    ZEND_HASH_FOREACH_PTR(CG(auto_globals), ag) {
        if (zend_string_equals(ag->name, env)) {
            continue;
        }
        if (zend_string_equals(ag->name, server)) {
            ag->armed = ag->auto_global_callback(ag->name);
        } else if (ag->jit) {
            /* $_REQUEST exists only once code used it; rebuilt then. */
            if (zend_string_equals(ag->name, request) && zend_hash_exists(&EG(symbol_table), ag->name)) {
                ag->armed = ag->auto_global_callback(ag->name);
            }
        } else if (ag->auto_global_callback) {
            /* $_GET, $_POST, $_COOKIE, $_FILES, in that order ($_FILES is
             * filled while $_POST parses a multipart body). */
            ag->armed = ag->auto_global_callback(ag->name);
        } else {
            ag->armed = 0;
        }
    } ZEND_HASH_FOREACH_END();
}

/* Gives PHP the request state of the bound request (adapted from
 * php_request_startup, on a request that keeps running). */
static int request_begin(void)
{
    int ok = SUCCESS;
    zend_try {
        php_output_activate();
        PG(header_is_being_sent) = 0;
        PG(connection_status) = PHP_CONNECTION_NORMAL;
        PG(ignore_user_abort) = 1;
        sapi_activate();
        zend_set_timeout(configured_time_limit(), 0);
        if (PG(expose_php)) {
            sapi_add_header(SAPI_PHP_VERSION_HEADER, sizeof(SAPI_PHP_VERSION_HEADER) - 1, 1);
        }
        if (PG(output_handler) && PG(output_handler)[0]) {
            zval handler;
            ZVAL_STRING(&handler, PG(output_handler));
            php_output_start_user(&handler, 0, PHP_OUTPUT_HANDLER_STDFLAGS);
            zval_ptr_dtor(&handler);
        } else if (PG(output_buffering)) {
            php_output_start_user(NULL, PG(output_buffering) > 1 ? PG(output_buffering) : 0,
                                  PHP_OUTPUT_HANDLER_STDFLAGS);
        } else if (PG(implicit_flush)) {
            php_output_set_implicit_flush(1);
        }
        import_superglobals();
        module_request("filter", 1);
    } zend_catch {
        ok = FAILURE;
    } zend_end_try();
    SG(sapi_started) = 1;
    state_active = 1;
    return ok;
}

/* Ends the request state of what ran (adapted from php_request_shutdown): its
 * shutdown functions, output (headers are sent here at the latest), session,
 * SAPI data and uploaded files. `own_shutdown_functions` is 0 for the boot, whose
 * shutdown functions are kept for the script's end. */
static void request_end(int own_shutdown_functions)
{
    if (own_shutdown_functions) {
        php_call_shutdown_functions();
        php_free_shutdown_functions();
    } else {
        boot_shutdown_functions = BG(user_shutdown_function_names);
        BG(user_shutdown_function_names) = NULL;
    }
    zend_try {
        php_output_end_all();
    } zend_end_try();
    zend_try {
        module_request("filter", 0);
    } zend_end_try();
    end_session();
    zend_try {
        php_output_deactivate();
    } zend_end_try();
    zend_try {
        sapi_deactivate();
    } zend_end_try();
    release_temporary_streams();
    /* stat()'s cache is per request (a file the next one sees may be gone). */
    php_clear_stat_cache(0, NULL, 0);
    restore_ini("memory_limit");
    restore_ini("max_execution_time");
    restore_ini("ignore_user_abort");
    /* No time limit while the worker waits for its next job. */
    zend_unset_timeout();
    zend_set_memory_limit(PG(memory_limit));
    state_active = 0;
}

/* Back to the worker script's own request (its state active again, for the
 * code after the loop and the final request shutdown). */
static void resume_worker(void)
{
    fephp_bind_request(worker);
    request_begin();
    if (boot_shutdown_functions && !BG(user_shutdown_function_names)) {
        BG(user_shutdown_function_names) = boot_shutdown_functions;
        boot_shutdown_functions = NULL;
    }
}

/* Ends the bound job and hands it back to the engine. */
static void finish_job(void)
{
    request_end(1);
    in_job = 0;
    fephp_current = NULL;
    SG(server_context) = NULL;
    fephp_engine.job_done(job.ctx);
}

PHP_FUNCTION(fephp_handle_request)
{
    zend_fcall_info fci;
    zend_fcall_info_cache fcc;
    ZEND_PARSE_PARAMETERS_START(1, 1)
        Z_PARAM_FUNC(fci, fcc)
    ZEND_PARSE_PARAMETERS_END();

    if (!worker) {
        zend_throw_exception(spl_ce_RuntimeException,
                             "frankenphp_handle_request() works only in a worker script (a pool with worker = \"...\" runs one)",
                             0);
        RETURN_THROWS();
    }
    if (in_job) {
        zend_throw_exception(spl_ce_RuntimeException,
                             "frankenphp_handle_request() cannot be called while a request is being handled", 0);
        RETURN_THROWS();
    }
    if (!booted) {
        request_end(0);
        booted = 1;
    }
    memset(&job, 0, sizeof(job));
    if (!fephp_engine.next_job(worker->ctx, &job)) {
        resume_worker();
        RETURN_FALSE;
    }
    fephp_bind_request(&job);
    in_job = 1;
    if (request_begin() == FAILURE) {
        finish_job();
        RETURN_TRUE;
    }

    zval retval;
    ZVAL_UNDEF(&retval);
    fci.retval = &retval;
    fci.params = NULL;
    fci.param_count = 0;
    zend_call_function(&fci, &fcc);
    zval_ptr_dtor(&retval);

    if (EG(exception)) {
        if (zend_is_unwind_exit(EG(exception)) || zend_is_graceful_exit(EG(exception))) {
            /* exit(): the job ends, and so does the worker script (as under
             * FrankenPHP); request shutdown completes the response. */
            zend_bailout();
        }
        /* Uncaught: as PHP reports it for a script (the exception handler, then
         * "PHP Fatal error: Uncaught ..."), and the worker goes on. */
        if (Z_TYPE(EG(user_exception_handler)) != IS_UNDEF) {
            zend_user_exception_handler();
        }
        if (EG(exception)) {
            zend_exception_error(EG(exception), E_ERROR);
        }
        zend_clear_exception();
    }
    finish_job();
    RETURN_TRUE;
}

/* headers_send($status = 200): sends the response headers now. 1xx (Early
 * Hints) is not sent by this SAPI yet: nothing happens and 0 is returned. */
PHP_FUNCTION(headers_send)
{
    zend_long status = 200;
    ZEND_PARSE_PARAMETERS_START(0, 1)
        Z_PARAM_OPTIONAL
        Z_PARAM_LONG(status)
    ZEND_PARSE_PARAMETERS_END();
    if (status < 200) {
        RETURN_LONG(0);
    }
    if (!SG(headers_sent)) {
        SG(sapi_headers).http_response_code = (int) status;
    }
    RETURN_LONG(sapi_send_headers());
}

int fephp_sapi_worker(const fephp_sapi_request *req)
{
    /* volatile: set in a zend_catch, after a longjmp. */
    volatile int rc = 0;
    worker = req;
    booted = 0;
    in_job = 0;
    boot_shutdown_functions = NULL;
    fephp_bind_request(req);
    fephp_enter_script_dir(req->script_filename);

    if (php_request_startup() == FAILURE) {
        SG(server_context) = NULL;
        fephp_current = NULL;
        worker = NULL;
        return -1;
    }
    PG(ignore_user_abort) = 1;
    state_active = 1;
    zend_first_try {
        zend_file_handle file;
        zend_stream_init_filename(&file, req->script_filename);
        php_execute_script(&file);
        zend_destroy_file_handle(&file);
    } zend_catch {
        /* exit() or a fatal error, in the script or in a job's handler: a job
         * still bound gets its response from the shutdown below. */
    } zend_end_try();

    if (!state_active) {
        /* The script ended on its own after a job (it left its loop): request
         * shutdown needs request state. */
        resume_worker();
    }
    if (boot_shutdown_functions && !BG(user_shutdown_function_names)) {
        BG(user_shutdown_function_names) = boot_shutdown_functions;
        boot_shutdown_functions = NULL;
    }
    zend_try {
        php_request_shutdown(NULL);
    } zend_catch {
        rc = 1;
    } zend_end_try();

    if (in_job) {
        in_job = 0;
        fephp_engine.job_done(job.ctx);
    }
    SG(server_context) = NULL;
    fephp_current = NULL;
    worker = NULL;
    return rc;
}

void fephp_sapi_included_files(int (*each)(void *arg, const char *path, size_t len), void *arg)
{
    zend_string *path;
    ZEND_HASH_FOREACH_STR_KEY(&EG(included_files), path) {
        if (path && each(arg, ZSTR_VAL(path), ZSTR_LEN(path))) {
            break;
        }
    } ZEND_HASH_FOREACH_END();
}

/* Entries a static property holds: an array's elements, else one value. */
static uint64_t entries_of(zval *v)
{
    ZVAL_DEREF(v);
    if (Z_TYPE_P(v) == IS_INDIRECT) {
        v = Z_INDIRECT_P(v);
        ZVAL_DEREF(v);
    }
    if (Z_TYPE_P(v) == IS_UNDEF) {
        return 0;
    }
    return Z_TYPE_P(v) == IS_ARRAY ? zend_hash_num_elements(Z_ARRVAL_P(v)) : 1;
}

void fephp_sapi_worker_figures(fephp_sapi_figures *out)
{
    out->memory = zend_memory_usage(0);
    out->globals = zend_hash_num_elements(&EG(symbol_table));
    out->classes = zend_hash_num_elements(EG(class_table));
    uint64_t statics = 0;
    zend_class_entry *ce;
    ZEND_HASH_FOREACH_PTR(EG(class_table), ce) {
        if (ce->type != ZEND_USER_CLASS || ce->default_static_members_count == 0) {
            continue;
        }
        zval *table = ZEND_MAP_PTR_GET(ce->static_members_table);
        if (!table) {
            continue; /* never used in this request chain */
        }
        for (int i = 0; i < ce->default_static_members_count; i++) {
            statics += entries_of(&table[i]);
        }
    } ZEND_HASH_FOREACH_END();
    out->statics = statics;
}
