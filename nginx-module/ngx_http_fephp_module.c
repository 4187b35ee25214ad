
/*
 * Copyright (C) fe-php contributors
 *
 * ngx_http_fephp_module: hands a location's requests to libfe_php, which
 * routes each one to embedded PHP, PHP-FPM or static files (include/fe_php.h).
 *
 * Process model: fephp_init() runs while the configuration is parsed, in the
 * master (PHP's module startup happens before the fork, so OPcache's shared
 * memory is shared by the workers; a reload builds a new engine the same way);
 * fephp_worker_start() runs in each worker's init_process.
 *
 * Threading: the event loop never waits for the engine.  Requests start with
 * fephp_handle_request_async(); a completion (or a streamed body's notify)
 * that arrives on an engine thread only queues its job under a mutex and
 * writes to an eventfd that the event loop watches; every nginx call happens
 * on the event loop thread.
 */


#include "ngx_http_fephp_module.h"


static ngx_int_t ngx_http_fephp_handler(ngx_http_request_t *r);
static void ngx_http_fephp_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_fephp_start(ngx_http_request_t *r);
static ngx_int_t ngx_http_fephp_build_request(ngx_http_request_t *r,
    fephp_request *req);
static void ngx_http_fephp_free_engine(void *data);
static ngx_int_t ngx_http_fephp_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_fephp_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_fephp_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_fephp_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_fephp_config(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_fephp(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static void ngx_http_fephp_log(void *userdata, const fephp_log_record *rec);
static ngx_int_t ngx_http_fephp_init_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_fephp_watch_events(ngx_cycle_t *cycle,
    const fephp_engine *engine);
static void ngx_http_fephp_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_fephp_commands[] = {

    { ngx_string("fephp_config"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_fephp_config,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fephp"),
      NGX_HTTP_LOC_CONF|NGX_HTTP_LIF_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_fephp,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fephp_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_fephp_loc_conf_t, timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_fephp_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_fephp_postconfiguration,      /* postconfiguration */

    ngx_http_fephp_create_main_conf,       /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_fephp_create_loc_conf,        /* create location configuration */
    ngx_http_fephp_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_fephp_module = {
    NGX_MODULE_V1,
    &ngx_http_fephp_module_ctx,            /* module context */
    ngx_http_fephp_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_fephp_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_fephp_exit_process,           /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_fephp_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    /* content handler of a "fephp" location; fe-php answers any method */

    rc = ngx_http_read_client_request_body(r, ngx_http_fephp_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_fephp_body_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    /* event loop: the whole body is in r->request_body (memory or temp file) */

    rc = ngx_http_fephp_start(r);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_fephp_start(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_str_t                    msg;
    fephp_result                 res;
    fephp_request                req;
    ngx_pool_cleanup_t          *cln;
    ngx_http_fephp_job_t        *job;
    ngx_http_fephp_loc_conf_t   *flcf;
    ngx_http_fephp_main_conf_t  *fmcf;

    /* event loop: hands the request to the engine; NGX_DONE while it works */

    fmcf = ngx_http_get_module_main_conf(r, ngx_http_fephp_module);
    flcf = ngx_http_get_module_loc_conf(r, ngx_http_fephp_module);

    if (fmcf->engine == NULL || ngx_http_fephp_channel == NULL) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "fephp: the engine is not running in this process");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    job = ngx_alloc(sizeof(ngx_http_fephp_job_t), r->connection->log);
    if (job == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(job, sizeof(ngx_http_fephp_job_t));

    job->body_fd = NGX_INVALID_FILE;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(job);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_fephp_jobs++;

    cln->handler = ngx_http_fephp_cleanup;
    cln->data = job;

    job->request = r;
    job->timeout = flcf->timeout;
    job->timer.handler = ngx_http_fephp_timeout_handler;
    job->timer.data = job;
    job->timer.log = r->connection->log;

    ngx_http_set_ctx(r, job, ngx_http_fephp_module);

    rc = ngx_http_fephp_build_request(r, &req);
    if (rc != NGX_OK) {
        return rc;
    }

    /* the body: borrowed, or served from the job by body_read */

    rc = ngx_http_fephp_body_init(r, job, &req);
    if (rc != NGX_OK) {
        return rc;
    }

    /* not shared yet: the engine learns of the job in the call below */
    job->awaiting = 1;

    ngx_http_fephp_submitting = job;

    res = fephp_handle_request_async(fmcf->engine, &req,
                                     ngx_http_fephp_on_response, job);

    ngx_http_fephp_submitting = NULL;

    if (res != FEPHP_RESULT_OK) {
        /* the callback will not run */
        job->awaiting = 0;

        if (ngx_http_fephp_last_error(r->pool, &msg) != NGX_OK) {
            ngx_str_set(&msg, "(no message)");
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fephp_handle_request_async() failed (%ui): %V",
                      (ngx_uint_t) res, &msg);

        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (job->inline_done) {
        return ngx_http_fephp_respond(job);
    }

    /* an engine thread has it: notice a client that leaves meanwhile */

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_add_timer(&job->timer, job->timeout);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_fephp_build_request(ngx_http_request_t *r, fephp_request *req)
{
    u_char            *p, *addr;
    size_t             len;
    uintptr_t          escape;
    ngx_uint_t         i, n;
    fephp_header      *hdr;
    ngx_list_part_t   *part;
    ngx_table_elt_t   *h;
    ngx_connection_t  *c;

    /*
     * event loop: a view of r, its body aside; everything it points to lives
     * in r->pool
     */

    c = r->connection;

    ngx_memzero(req, sizeof(fephp_request));

    req->method.ptr = (const char *) r->method_name.data;
    req->method.len = r->method_name.len;

    /*
     * The raw target, unless a rewrite, try_files or error_page changed the
     * URI: then the current one, escaped again (as proxy_pass does).
     */

    if (r->valid_unparsed_uri && r == r->main) {
        req->target.ptr = (const char *) r->unparsed_uri.data;
        req->target.len = r->unparsed_uri.len;

    } else {
        escape = 2 * ngx_escape_uri(NULL, r->uri.data, r->uri.len,
                                    NGX_ESCAPE_URI);

        len = r->uri.len + escape + (r->args.len ? 1 + r->args.len : 0);

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        req->target.ptr = (const char *) p;
        req->target.len = len;

        if (escape) {
            p = (u_char *) ngx_escape_uri(p, r->uri.data, r->uri.len,
                                          NGX_ESCAPE_URI);

        } else {
            p = ngx_cpymem(p, r->uri.data, r->uri.len);
        }

        if (r->args.len) {
            *p++ = '?';
            ngx_memcpy(p, r->args.data, r->args.len);
        }
    }

    if (r->http_protocol.len) {
        req->protocol.ptr = (const char *) r->http_protocol.data;
        req->protocol.len = r->http_protocol.len;

    } else {
        /* HTTP/0.9 has no protocol token */
        req->protocol.ptr = "HTTP/1.0";
        req->protocol.len = sizeof("HTTP/1.0") - 1;
    }

    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        n += part->nelts;
    }

    if (n) {
        hdr = ngx_palloc(r->pool, n * sizeof(fephp_header));
        if (hdr == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        n = 0;

        for (part = &r->headers_in.headers.part; part; part = part->next) {
            h = part->elts;

            for (i = 0; i < part->nelts; i++) {
                hdr[n].name.ptr = (const char *) h[i].key.data;
                hdr[n].name.len = h[i].key.len;
                hdr[n].value.ptr = (const char *) h[i].value.data;
                hdr[n].value.len = h[i].value.len;
                n++;
            }
        }

        req->headers = hdr;
        req->header_count = n;
    }

    req->remote_addr.ptr = (const char *) c->addr_text.data;
    req->remote_addr.len = c->addr_text.len;
    req->remote_port = ngx_inet_get_port(c->sockaddr);

    if (ngx_connection_local_sockaddr(c, NULL, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    addr = ngx_pnalloc(r->pool, NGX_SOCKADDR_STRLEN);
    if (addr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    req->local_addr.ptr = (const char *) addr;
    req->local_addr.len = ngx_sock_ntop(c->local_sockaddr, c->local_socklen,
                                        addr, NGX_SOCKADDR_STRLEN, 0);
    req->local_port = ngx_inet_get_port(c->local_sockaddr);

#if (NGX_SSL || NGX_COMPAT)
    req->tls = (c->ssl != NULL);
#endif

    return NGX_OK;
}


ngx_int_t
ngx_http_fephp_last_error(ngx_pool_t *pool, ngx_str_t *msg)
{
    size_t  len;

    /* the message of this thread's last failed library call, into pool */

    if (fephp_last_error(NULL, 0, &len) != FEPHP_RESULT_BUFFER_TOO_SMALL) {
        return NGX_ERROR;
    }

    msg->data = ngx_pnalloc(pool, len + 1);
    if (msg->data == NULL) {
        return NGX_ERROR;
    }

    if (fephp_last_error((char *) msg->data, len + 1, &len)
        != FEPHP_RESULT_OK)
    {
        return NGX_ERROR;
    }

    msg->len = len;

    return NGX_OK;
}


static void
ngx_http_fephp_free_engine(void *data)
{
    ngx_http_fephp_main_conf_t  *fmcf = data;

    /* the cycle pool goes: in the master after a reload, or at exit */

    if (ngx_http_fephp_started) {
        /*
         * Only at exit, in a process whose engine threads run (a worker's
         * cycle pool goes nowhere else).  Freeing the engine would make
         * them tear down (thread-local destructors, OpenSSL's among them)
         * while exit() runs the libraries' destructors, and nothing can
         * wait for them.  Left alone they stay parked, and the process ends
         * them.
         */
        return;
    }

    fephp_engine_free(fmcf->engine);
    fmcf->engine = NULL;
}


static ngx_int_t
ngx_http_fephp_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_fephp_main_conf_t  *fmcf;

    /* the http block is read: a "fephp" location needs an engine */

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_fephp_module);

    if (fmcf->used_file && fmcf->config.data == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"fephp\" in %s:%ui needs "
                      "\"fephp_config /path/to/fe-php.toml;\" "
                      "in the http block", fmcf->used_file, fmcf->used_line);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void *
ngx_http_fephp_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_fephp_main_conf_t  *fmcf;

    fmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_fephp_main_conf_t));
    if (fmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     fmcf->config = { 0, NULL };
     *     fmcf->engine = NULL;
     *     fmcf->used_file = NULL;
     *     fmcf->used_line = 0;
     */

    return fmcf;
}


static void *
ngx_http_fephp_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_fephp_loc_conf_t  *flcf;

    flcf = ngx_palloc(cf->pool, sizeof(ngx_http_fephp_loc_conf_t));
    if (flcf == NULL) {
        return NULL;
    }

    flcf->enable = NGX_CONF_UNSET;
    flcf->timeout = NGX_CONF_UNSET_MSEC;

    return flcf;
}


static char *
ngx_http_fephp_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_fephp_loc_conf_t  *prev = parent;
    ngx_http_fephp_loc_conf_t  *conf = child;

    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 60000);

    return NGX_CONF_OK;
}


static char *
ngx_http_fephp_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_fephp_main_conf_t  *fmcf = conf;

    u_char              *p;
    size_t               len;
    ngx_str_t           *value, msg;
    fephp_result         rc;
    ngx_pool_cleanup_t  *cln;
    const fephp_engine  *engine;

    /* "fephp_config path": in the master, the engine for this http block */

    if (fmcf->config.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    fmcf->config = value[1];

    if (ngx_conf_full_name(cf->cycle, &fmcf->config, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_process == NGX_PROCESS_SIGNALLER) {
        /* "nginx -s ..." reads the configuration only to find the pid file */
        return NGX_CONF_OK;
    }

    if (ngx_http_fephp_started) {
        /*
         * A reload with "master_process off": this process already serves
         * with an engine, and a second one would start a second PHP thread
         * in the same process, which NTS PHP does not allow.
         */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "fephp cannot reload with \"master_process off\"; "
                           "restart nginx");
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_fephp_free_engine;
    cln->data = fmcf;

    /*
     * Here, in the master, while the configuration is read: fephp_init()
     * validates the file and starts PHP's modules before the workers fork.
     * An error refuses the configuration (a reload keeps the old one); later
     * hooks such as init_module could only exit.
     */

    /*
     * The library logs PHP's messages, PHP-FPM's stderr and its own errors
     * through this callback into nginx's error_log (there is no other reader
     * of them inside nginx).
     */

    rc = fephp_log_set_callback(ngx_http_fephp_log, NULL,
                                FEPHP_LOG_LEVEL_INFO);
    if (rc != FEPHP_RESULT_OK) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "fephp: library log lines will not reach the "
                           "error log (fephp_log_set_callback: %uD)", rc);
    }

    engine = NULL;

    rc = fephp_init((const char *) fmcf->config.data, NULL, &engine);

    if (rc != FEPHP_RESULT_OK) {
        if (ngx_http_fephp_last_error(cf->temp_pool, &msg) != NGX_OK) {
            ngx_str_set(&msg, "(no message)");
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid fe-php configuration \"%V\":\n%V\n",
                           &fmcf->config, &msg);
        return NGX_CONF_ERROR;
    }

    fmcf->engine = engine;

    /* the "[i]" lines: reduced modes the server still starts in */

    if (fephp_engine_messages(engine, NULL, 0, &len)
            == FEPHP_RESULT_BUFFER_TOO_SMALL
        && len > 0)
    {
        p = ngx_pnalloc(cf->temp_pool, len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        if (fephp_engine_messages(engine, (char *) p, len + 1, &len)
            == FEPHP_RESULT_OK)
        {
            ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0, "fe-php: %*s", len, p);
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_fephp(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_fephp_loc_conf_t  *flcf = conf;

    ngx_str_t                   *value;
    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_fephp_main_conf_t  *fmcf;

    /* "fephp [on|off]": this location's content handler becomes ours */

    if (flcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 1 || ngx_strcmp(value[1].data, "on") == 0) {
        flcf->enable = 1;

    } else if (ngx_strcmp(value[1].data, "off") == 0) {
        /* the default: content handlers are not inherited anyway */
        flcf->enable = 0;
        return NGX_CONF_OK;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, "
                           "it must be \"on\" or \"off\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_fephp_handler;

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_fephp_module);

    if (fmcf->used_file == NULL) {
        fmcf->used_file = cf->conf_file->file.name.data;
        fmcf->used_line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}


/*
 * A library log line, on whichever thread logged it (the event loop, a PHP
 * thread or the library's I/O thread): only the cycle's log is used, never a
 * request's, whose handler reads request state the event loop may be changing.
 * PHP's warnings and errors go out at "error", as nginx logs what php-fpm
 * sends on stderr, so users of nginx + php-fpm find them where they expect.
 */

static void
ngx_http_fephp_log(void *userdata, const fephp_log_record *rec)
{
    ngx_str_t   target, message, uri;
    ngx_uint_t  level;

    switch (rec->level) {
    case FEPHP_LOG_LEVEL_ERROR:
        level = NGX_LOG_ERR;
        break;
    case FEPHP_LOG_LEVEL_WARN:
        level = NGX_LOG_WARN;
        break;
    case FEPHP_LOG_LEVEL_INFO:
        level = NGX_LOG_INFO;
        break;
    default:
        level = NGX_LOG_DEBUG;
    }

    target.len = rec->target.len;
    target.data = (u_char *) rec->target.ptr;
    message.len = rec->message.len;
    message.data = (u_char *) rec->message.ptr;
    uri.len = rec->uri.len;
    uri.data = (u_char *) rec->uri.ptr;

    if (level == NGX_LOG_WARN && target.len == 3
        && ngx_strncmp(target.data, "php", 3) == 0)
    {
        level = NGX_LOG_ERR;
    }

    if (uri.len) {
        ngx_log_error(level, ngx_cycle->log, 0,
                      "fe-php %V: %V, request: \"%V\"",
                      &target, &message, &uri);

    } else {
        ngx_log_error(level, ngx_cycle->log, 0, "fe-php %V: %V",
                      &target, &message);
    }
}


static ngx_int_t
ngx_http_fephp_init_process(ngx_cycle_t *cycle)
{
    int                          err;
    sigset_t                     set, old;
    ngx_str_t                    msg;
    fephp_result                 rc;
    ngx_connection_t            *c;
    ngx_http_fephp_main_conf_t  *fmcf;

    /* each worker, after the fork: the eventfd channel, the engine's threads */

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_fephp_module);

    if (fmcf == NULL || fmcf->engine == NULL) {
        return NGX_OK;
    }

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        /* the cache manager and loader serve no requests */
        return NGX_OK;
    }

    ngx_queue_init(&ngx_http_fephp_ready);
    ngx_rbtree_init(&ngx_http_fephp_streams, &ngx_http_fephp_sentinel,
                    ngx_rbtree_insert_value);

    ngx_http_fephp_loop_thread = pthread_self();

    ngx_http_fephp_efd = eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC);

    if (ngx_http_fephp_efd == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "fephp: eventfd() failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(ngx_http_fephp_efd, cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->log = cycle->log;
    c->read->log = cycle->log;
    c->write->log = cycle->log;
    c->read->handler = ngx_http_fephp_wake_handler;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_fephp_channel = c;

    /*
     * The engine's threads start in fephp_worker_start() and inherit this
     * thread's signal mask: with nginx's signals blocked there, a signal
     * sent to the worker reaches the event loop, never a PHP thread.
     * SIGPROF stays deliverable: it is PHP's max_execution_time.
     */

    if (sigfillset(&set) == -1
        || sigdelset(&set, SIGPROF) == -1
        || sigdelset(&set, SIGSEGV) == -1
        || sigdelset(&set, SIGBUS) == -1
        || sigdelset(&set, SIGFPE) == -1
        || sigdelset(&set, SIGILL) == -1
        || sigdelset(&set, SIGABRT) == -1)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "fephp: sigset operations failed");
        return NGX_ERROR;
    }

    err = pthread_sigmask(SIG_BLOCK, &set, &old);
    if (err) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, err,
                      "fephp: pthread_sigmask() failed");
        return NGX_ERROR;
    }

    rc = fephp_worker_start(fmcf->engine);

    ngx_http_fephp_started = 1;

    /* nginx's mask again, plus the SIGPROF fephp_worker_start() blocked */

    if (sigaddset(&old, SIGPROF) == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "fephp: sigaddset() failed");
        return NGX_ERROR;
    }

    err = pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, err,
                      "fephp: pthread_sigmask() failed");
        return NGX_ERROR;
    }

    if (rc != FEPHP_RESULT_OK) {
        if (ngx_http_fephp_last_error(cycle->pool, &msg) != NGX_OK) {
            ngx_str_set(&msg, "(no message)");
        }

        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "fephp_worker_start() failed: %V", &msg);
        return NGX_ERROR;
    }

    return ngx_http_fephp_watch_events(cycle, fmcf->engine);
}


/*
 * Embedded PHP's responses arrive on a descriptor of the library (the runner
 * pool's reply lane): reading them here runs their completions on the event
 * loop's thread, which queue the job as any completion does, without the
 * library's reply thread in between.
 */

static const fephp_engine  *ngx_http_fephp_events_engine;
static ngx_connection_t  *ngx_http_fephp_events;


static void
ngx_http_fephp_events_handler(ngx_event_t *rev)
{
    if (fephp_engine_process_events(ngx_http_fephp_events_engine)
        != FEPHP_RESULT_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, rev->log, 0,
                      "fephp: receiving PHP responses failed");
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, rev->log, 0,
                      "fephp: could not watch PHP responses");
    }
}


static ngx_int_t
ngx_http_fephp_watch_events(ngx_cycle_t *cycle, const fephp_engine *engine)
{
    int                fd;
    ngx_connection_t  *c;

    if (fephp_engine_event_fd(engine, &fd) != FEPHP_RESULT_OK || fd < 0) {
        /* no runner pool here: completions come on the library's threads */
        return NGX_OK;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->log = cycle->log;
    c->read->log = cycle->log;
    c->write->log = cycle->log;
    c->read->handler = ngx_http_fephp_events_handler;
    ngx_http_fephp_events_engine = engine;
    ngx_http_fephp_events = c;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    /* what arrived before the descriptor was watched */
    ngx_post_event(c->read, &ngx_posted_events);

    return NGX_OK;
}


static void
ngx_http_fephp_exit_process(ngx_cycle_t *cycle)
{
    ngx_connection_t  *c;

    /*
     * Worker exit.  An engine thread may still finish a request whose client
     * left, and write to the eventfd: it stays open until the process ends
     * (closed, its number could be reused by another file).  Only the
     * connection is given back, so nginx does not report it as left open.
     */

    c = ngx_http_fephp_events;

    if (c != NULL) {
        /* the descriptor is the library's: only the connection is returned */
        ngx_http_fephp_events = NULL;

        if (c->read->active) {
            (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
        }

        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
    }

    c = ngx_http_fephp_channel;

    if (c == NULL) {
        return;
    }

    ngx_http_fephp_channel = NULL;

    if (c->read->active) {
        if (ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "fephp: could not remove the eventfd from the "
                          "event loop");
        }
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);

    if (ngx_http_fephp_jobs) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "fephp: %ui request(s) still in the engine at exit",
                      ngx_http_fephp_jobs);
    }
}
