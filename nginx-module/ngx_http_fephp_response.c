/*
 * ngx_http_fephp_module: the response — status and headers into
 * r->headers_out, and the body (bytes, a file, or a stream pumped with
 * back-pressure) into nginx's output chain.
 */


#include "ngx_http_fephp_module.h"


static ngx_int_t ngx_http_fephp_send_last(ngx_http_request_t *r,
    ngx_buf_t *b);
static ngx_int_t ngx_http_fephp_set_headers(ngx_http_request_t *r,
    fephp_response *resp);
static void ngx_http_fephp_set_content_type(ngx_http_request_t *r,
    u_char *value, size_t len);
static void ngx_http_fephp_stream_write_handler(ngx_http_request_t *r);


/* response headers nginx's filters look for in r->headers_out */
static ngx_http_header_t  ngx_http_fephp_headers_out[] = {
    { ngx_string("server"),
      offsetof(ngx_http_headers_out_t, server), NULL },
    { ngx_string("date"),
      offsetof(ngx_http_headers_out_t, date), NULL },
    { ngx_string("content-encoding"),
      offsetof(ngx_http_headers_out_t, content_encoding), NULL },
    { ngx_string("etag"),
      offsetof(ngx_http_headers_out_t, etag), NULL },
    { ngx_string("expires"),
      offsetof(ngx_http_headers_out_t, expires), NULL },
    { ngx_string("refresh"),
      offsetof(ngx_http_headers_out_t, refresh), NULL },
    { ngx_string("www-authenticate"),
      offsetof(ngx_http_headers_out_t, www_authenticate), NULL },
    { ngx_string("content-range"),
      offsetof(ngx_http_headers_out_t, content_range), NULL },
    { ngx_string("accept-ranges"),
      offsetof(ngx_http_headers_out_t, accept_ranges), NULL },
    { ngx_null_string, 0, NULL }
};


ngx_int_t
ngx_http_fephp_respond(ngx_http_fephp_job_t *job)
{
    int                  fd;
    u_char               msg[128];
    size_t               len;
    uint64_t             offset, flen;
    ngx_int_t            rc;
    ngx_buf_t           *b;
    fephp_result         res;
    const uint8_t       *bytes;
    fephp_response      *resp;
    ngx_http_request_t  *r;

    /* event loop: the head is here; a finalize code, NGX_DONE if streaming */

    r = job->request;
    resp = job->response;

    job->started = 1;

    if (job->result != FEPHP_RESULT_OK || resp == NULL) {
        if (fephp_result_message(job->result, (char *) msg, sizeof(msg), &len)
            != FEPHP_RESULT_OK)
        {
            len = 0;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fephp: the engine failed the request (%ui): %*s",
                      (ngx_uint_t) job->result, len, msg);

        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = fephp_response_status(resp);

    if (ngx_http_fephp_set_headers(r, resp) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * The library already evaluated conditional and range requests
     * (RFC 9110 order, If-Range, multipart): nginx's filters must not
     * evaluate them a second time.
     */
    r->allow_ranges = 0;
    r->disable_not_modified = 1;

    switch (fephp_response_body_kind(resp)) {

    case FEPHP_BODY_KIND_BYTES:

        res = fephp_response_body_bytes(resp, &bytes, &len);
        if (res != FEPHP_RESULT_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_out.content_length_n = len;

        rc = ngx_http_send_header(r);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }

        if (len == 0) {
            return ngx_http_send_special(r, NGX_HTTP_LAST);
        }

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        /* fe-php's bytes: the response lives as long as the request pool */
        b->pos = (u_char *) bytes;
        b->last = (u_char *) bytes + len;
        b->memory = 1;

        return ngx_http_fephp_send_last(r, b);

    case FEPHP_BODY_KIND_FILE:

        res = fephp_response_body_file(resp, &fd, &offset, &flen);
        if (res != FEPHP_RESULT_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_out.content_length_n = (off_t) flen;

        rc = ngx_http_send_header(r);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }

        if (flen == 0) {
            return ngx_http_send_special(r, NGX_HTTP_LAST);
        }

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->file = ngx_pcalloc(r->pool, sizeof(ngx_file_t));
        if (b->file == NULL) {
            return NGX_ERROR;
        }

        /* the response owns the descriptor: sendfile() it, never close it */
        b->file->fd = fd;
        b->file->name = r->uri;
        b->file->log = r->connection->log;

        b->in_file = 1;
        b->file_pos = (off_t) offset;
        b->file_last = (off_t) (offset + flen);

        return ngx_http_fephp_send_last(r, b);

    case FEPHP_BODY_KIND_STREAM:

        job->streaming = 1;

        rc = ngx_http_send_header(r);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            /* the response is freed with the request: the producer stops */
            return rc;
        }

        /* the head now: the first bytes of a stream may take long */
        if (ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR) {
            return NGX_ERROR;
        }

        job->node.key = (ngx_rbtree_key_t) (uintptr_t) job;

        pthread_mutex_lock(&ngx_http_fephp_lock);
        ngx_rbtree_insert(&ngx_http_fephp_streams, &job->node);
        job->in_tree = 1;
        pthread_mutex_unlock(&ngx_http_fephp_lock);

        /* may run ngx_http_fephp_on_body() here at once: it only queues */
        res = fephp_response_set_body_notify(resp, ngx_http_fephp_on_body, job);
        if (res != FEPHP_RESULT_OK) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "fephp_response_set_body_notify() failed (%ui)",
                          (ngx_uint_t) res);
            return NGX_ERROR;
        }

        r->write_event_handler = ngx_http_fephp_stream_write_handler;

        return ngx_http_fephp_pump(job);

    default: /* FEPHP_BODY_KIND_EMPTY */

        if (r->headers_out.content_length_n == -1
            && r->method != NGX_HTTP_HEAD)
        {
            r->headers_out.content_length_n = 0;
        }

        rc = ngx_http_send_header(r);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }

        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }
}


static ngx_int_t
ngx_http_fephp_send_last(ngx_http_request_t *r, ngx_buf_t *b)
{
    ngx_chain_t  out;

    /* event loop: sends b, which holds data, as the whole body */

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_fephp_set_headers(ngx_http_request_t *r, fephp_response *resp)
{
    u_char             *p;
    off_t               n;
    size_t              i, count;
    fephp_str           name, value;
    ngx_table_elt_t    *h;
    ngx_http_header_t  *hh;

    /* event loop: fe-php's headers into r->headers_out, as upstream does */

    count = fephp_response_header_count(resp);

    for (i = 0; i < count; i++) {

        if (fephp_response_header(resp, i, &name, &value) != FEPHP_RESULT_OK) {
            return NGX_ERROR;
        }

        if (name.len == 0) {
            continue;
        }

        /* hop-by-hop headers are nginx's to send */

        if ((name.len == 10
             && ngx_strncasecmp((u_char *) name.ptr, (u_char *) "Connection",
                                10) == 0)
            || (name.len == 10
                && ngx_strncasecmp((u_char *) name.ptr,
                                   (u_char *) "Keep-Alive", 10) == 0)
            || (name.len == 17
                && ngx_strncasecmp((u_char *) name.ptr,
                                   (u_char *) "Transfer-Encoding", 17) == 0))
        {
            continue;
        }

        if (name.len == 14
            && ngx_strncasecmp((u_char *) name.ptr,
                               (u_char *) "Content-Length", 14) == 0)
        {
            /* content_length_n, not a header; a body in hand overrides it */
            n = ngx_atoof((u_char *) value.ptr, value.len);
            if (n == NGX_ERROR) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "fephp: invalid Content-Length \"%*s\"",
                              value.len, value.ptr);
                return NGX_ERROR;
            }

            r->headers_out.content_length_n = n;
            continue;
        }

        if (name.len == 12
            && ngx_strncasecmp((u_char *) name.ptr,
                               (u_char *) "Content-Type", 12) == 0)
        {
            /* r->headers_out.content_type, not a list entry */
            p = ngx_pnalloc(r->pool, value.len + 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(p, value.ptr, value.len);
            p[value.len] = '\0';

            ngx_http_fephp_set_content_type(r, p, value.len);
            continue;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        /* key, value (NUL-terminated for nginx's filters), lowercase key */

        p = ngx_pnalloc(r->pool, name.len + 1 + value.len + 1 + name.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        h->key.len = name.len;
        h->key.data = p;
        p = ngx_cpymem(p, name.ptr, name.len);
        *p++ = '\0';

        h->value.len = value.len;
        h->value.data = p;
        p = ngx_cpymem(p, value.ptr, value.len);
        *p++ = '\0';

        h->lowcase_key = p;
        ngx_strlow(h->lowcase_key, h->key.data, h->key.len);

        h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

        if (h->key.len == 8
            && ngx_strncmp(h->lowcase_key, "location", 8) == 0)
        {
            /*
             * As upstream: a relative Location stays relative; setting
             * headers_out.location would make nginx prefix scheme and host.
             */
            if (h->value.len && h->value.data[0] != '/') {
                r->headers_out.location = h;
            }

            continue;
        }

        if (h->key.len == 13
            && ngx_strncmp(h->lowcase_key, "last-modified", 13) == 0)
        {
            r->headers_out.last_modified = h;
            r->headers_out.last_modified_time =
                               ngx_parse_http_time(h->value.data, h->value.len);
            continue;
        }

        /* headers nginx's filters look at (gzip weakens ETag, and so on) */

        for (hh = ngx_http_fephp_headers_out; hh->name.len; hh++) {
            if (hh->name.len == h->key.len
                && ngx_strncmp(hh->name.data, h->lowcase_key, h->key.len) == 0)
            {
                *((ngx_table_elt_t **)
                    ((char *) &r->headers_out + hh->offset)) = h;
                break;
            }
        }
    }

    return NGX_OK;
}


static void
ngx_http_fephp_set_content_type(ngx_http_request_t *r, u_char *value,
    size_t len)
{
    u_char  *p, *last;

    /* event loop: as upstream, a charset parameter goes to .charset */

    r->headers_out.content_type_len = len;
    r->headers_out.content_type.len = len;
    r->headers_out.content_type.data = value;
    r->headers_out.content_type_lowcase = NULL;

    for (p = value; *p; p++) {

        if (*p != ';') {
            continue;
        }

        last = p;

        while (*++p == ' ') { /* void */ }

        if (*p == '\0') {
            return;
        }

        if (ngx_strncasecmp(p, (u_char *) "charset=", 8) != 0) {
            continue;
        }

        p += 8;

        r->headers_out.content_type_len = last - value;

        if (*p == '"') {
            p++;
        }

        last = value + len;

        if (last > p && *(last - 1) == '"') {
            last--;
        }

        r->headers_out.charset.len = last - p;
        r->headers_out.charset.data = p;

        return;
    }
}


ngx_int_t
ngx_http_fephp_pump(ngx_http_fephp_job_t *job)
{
    size_t                     n;
    ngx_int_t                  rc;
    ngx_str_t                  msg;
    ngx_buf_t                 *b, *last;
    ngx_uint_t                 inflight, engine_wait, rounds, wake;
    ngx_chain_t               *cl, *out, **ll;
    ngx_event_t               *wev;
    fephp_result               res;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    /* event loop: stream to client; NGX_DONE if more, else finalize code */

    r = job->request;
    c = r->connection;

    engine_wait = 0;
    rc = NGX_OK;

    for (rounds = 0; /* void */; rounds++) {

        if (rounds == 16) {
            /* fast producer, fast client: let other events run first */
            pthread_mutex_lock(&ngx_http_fephp_lock);
            wake = ngx_http_fephp_enqueue(job);
            pthread_mutex_unlock(&ngx_http_fephp_lock);

            if (wake) {
                ngx_http_fephp_wake();
            }

            break;
        }

        inflight = 0;

        for (cl = job->busy; cl; cl = cl->next) {
            inflight++;
        }

        out = NULL;
        ll = &out;
        last = NULL;

        while (!job->done && inflight < NGX_HTTP_FEPHP_STREAM_BUFS) {

            cl = ngx_chain_get_free_buf(r->pool, &job->free);
            if (cl == NULL) {
                return NGX_ERROR;
            }

            b = cl->buf;

            if (b->start == NULL) {
                b->start = ngx_palloc(r->pool, NGX_HTTP_FEPHP_STREAM_BUF_SIZE);
                if (b->start == NULL) {
                    return NGX_ERROR;
                }

                b->end = b->start + NGX_HTTP_FEPHP_STREAM_BUF_SIZE;
            }

            /* a recycled buffer keeps its flags */
            b->pos = b->start;
            b->last = b->start;
            b->temporary = 1;
            b->flush = 0;
            b->sync = 0;
            b->last_buf = 0;
            b->last_in_chain = 0;
            b->tag = (ngx_buf_tag_t) &ngx_http_fephp_module;

            n = 0;

            res = fephp_response_body_try_read(job->response, b->start,
                                               b->end - b->start, &n);

            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "fephp stream read: %ui, %uz bytes, %ui in flight",
                           (ngx_uint_t) res, n, inflight);

            if (res == FEPHP_RESULT_AGAIN) {
                cl->next = job->free;
                job->free = cl;
                engine_wait = 1;
                break;
            }

            if (res != FEPHP_RESULT_OK) {
                if (ngx_http_fephp_last_error(r->pool, &msg) != NGX_OK) {
                    ngx_str_set(&msg, "(no message)");
                }

                ngx_log_error(NGX_LOG_ERR, c->log, 0,
                              "fephp: the response body failed after it "
                              "started (%ui): %V", (ngx_uint_t) res, &msg);
                return NGX_ERROR;
            }

            if (n == 0) {
                job->done = 1;
                b->temporary = 0;
                b->last_buf = (r == r->main) ? 1 : 0;
                b->last_in_chain = 1;
                b->sync = (r == r->main) ? 0 : 1;

            } else {
                b->last = b->start + n;
                inflight++;
            }

            *ll = cl;
            ll = &cl->next;
            last = b;
        }

        if (last && !job->done) {
            /* a stream is incremental (flush()): no filter may hold it */
            last->flush = 1;
        }

        rc = ngx_http_output_filter(r, out);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "fephp stream output: %i, done:%ui", rc,
                       (ngx_uint_t) job->done);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        ngx_chain_update_chains(r->pool, &job->free, &job->busy, &out,
                                (ngx_buf_tag_t) &ngx_http_fephp_module);

        if (job->done || engine_wait) {
            break;
        }

        inflight = 0;

        for (cl = job->busy; cl; cl = cl->next) {
            inflight++;
        }

        if (inflight >= NGX_HTTP_FEPHP_STREAM_BUFS) {
            /* the client is slower than the engine: wait for write events */
            break;
        }
    }

    if (job->done) {
        if (job->timer.timer_set) {
            ngx_del_timer(&job->timer);
        }

        return rc;
    }

    if (engine_wait) {
        ngx_add_timer(&job->timer, job->timeout);

    } else if (job->timer.timer_set) {
        ngx_del_timer(&job->timer);
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    wev = c->write;

    if (c->data == r) {
        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (wev->active && !wev->ready) {
        if (!wev->delayed) {
            ngx_add_timer(wev, clcf->send_timeout);
        }

    } else if (wev->timer_set && !wev->delayed) {
        ngx_del_timer(wev);
    }

    return NGX_DONE;
}


static void
ngx_http_fephp_stream_write_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_fephp_job_t      *job;
    ngx_http_core_loc_conf_t  *clcf;

    /* event loop: the client can take more, or send_timeout expired */

    c = r->connection;
    wev = c->write;

    if (wev->timedout) {

        if (!wev->delayed) {
            c->timedout = 1;
            ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                          "client timed out");
            ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
            return;
        }

        /* limit_rate's pause is over */
        wev->timedout = 0;
        wev->delayed = 0;

    } else if (wev->delayed) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    job = ngx_http_get_module_ctx(r, ngx_http_fephp_module);

    rc = ngx_http_fephp_pump(job);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


void
ngx_http_fephp_timeout_handler(ngx_event_t *ev)
{
    ngx_connection_t      *c;
    ngx_http_request_t    *r;
    ngx_http_fephp_job_t  *job;

    /* event loop: fephp_timeout; r is alive (cleanup deletes the timer) */

    job = ev->data;
    r = job->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_log_error(NGX_LOG_ERR, c->log, NGX_ETIMEDOUT,
                  "fephp: no answer from the engine within fephp_timeout");

    ngx_http_finalize_request(r, job->started ? NGX_ERROR
                                              : NGX_HTTP_GATEWAY_TIME_OUT);
    ngx_http_run_posted_requests(c);
}
