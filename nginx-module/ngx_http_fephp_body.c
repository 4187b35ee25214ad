/*
 * ngx_http_fephp_module: the request body, as nginx read it, handed to the
 * engine.  nginx keeps client_max_body_size (413) and client_body_buffer_size:
 * a small body arrives in memory, a larger one in nginx's temp file.
 *
 * A body in one memory buffer is passed as fephp_request.body (the engine
 * copies it during the call).  Any other body is served through body_read
 * as the engine consumes it: on the PHP thread as the script reads it, on
 * the library's I/O thread as it goes to PHP-FPM or an upstream.  The job
 * owns what body_read reads, since it may outlive the request (a client
 * that leaves while PHP still reads its body): a dup() of the temp file's
 * descriptor, and a copy of the parts nginx holds in memory (at most about
 * client_body_buffer_size).  The file is read back with pread(), a block at
 * a time: a large body is never in memory.
 */


#include "ngx_http_fephp_module.h"


ngx_int_t
ngx_http_fephp_body_init(ngx_http_request_t *r, ngx_http_fephp_job_t *job,
    fephp_request *req)
{
    u_char                 *p;
    off_t                   size, total, mem;
    ngx_fd_t                fd;
    ngx_buf_t              *b;
    ngx_uint_t              n;
    ngx_chain_t            *cl;
    ngx_temp_file_t        *tf;
    ngx_http_fephp_part_t  *part;

    /* event loop, before the engine learns of the job */

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    tf = r->request_body->temp_file;

    total = 0;
    mem = 0;
    n = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            size = b->last - b->pos;
            mem += size;

        } else if (b->in_file) {
            size = b->file_last - b->file_pos;

            /* nginx spools a request body to its one temp file */
            if (size && (tf == NULL || b->file != &tf->file)) {
                ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                              "fephp: a request body buffer in a file "
                              "other than the request's temp file");
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

        } else {
            size = 0;
        }

        if (size) {
            total += size;
            n++;
        }
    }

    if (total == 0) {
        return NGX_OK;
    }

    if ((uint64_t) total > (size_t) -1) {
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    req->body_len = (size_t) total;

    b = r->request_body->bufs->buf;

    if (n == 1 && ngx_buf_in_memory(b) && b->last > b->pos) {
        /* one buffer in memory: borrowed for the call, the engine copies it */
        req->body = b->pos;
        return NGX_OK;
    }

    /* the parts, then the copies of those in memory, in one allocation */

    job->parts = ngx_alloc(n * sizeof(ngx_http_fephp_part_t) + (size_t) mem,
                           r->connection->log);
    if (job->parts == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (mem < total) {
        /*
         * The job's own descriptor of the temp file: nginx closes (and
         * unlinks) its own with the request pool, which may go first.
         */

        fd = fcntl(tf->file.fd, F_DUPFD_CLOEXEC, 0);

        if (fd == NGX_INVALID_FILE) {
            ngx_log_error(NGX_LOG_CRIT, r->connection->log, ngx_errno,
                          "fephp: dup() of the request body file \"%V\" "
                          "failed", &tf->file.name);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        job->body_fd = fd;
    }

    part = job->parts;
    p = (u_char *) (part + n);

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            if (b->last == b->pos) {
                continue;
            }

            part->data = p;
            part->offset = 0;
            part->size = b->last - b->pos;

            p = ngx_cpymem(p, b->pos, b->last - b->pos);

        } else if (b->in_file && b->file_last > b->file_pos) {
            part->data = NULL;
            part->offset = b->file_pos;
            part->size = b->file_last - b->file_pos;

        } else {
            continue;
        }

        part++;
    }

    job->nparts = n;
    job->part = 0;

    req->body = NULL;
    req->body_read = ngx_http_fephp_body_read;
    req->body_read_ctx = job;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fephp body: %O bytes in %ui part(s), %O in memory, fd:%d",
                   total, n, mem, job->body_fd);

    return NGX_OK;
}


/*
 * fephp_body_read_cb, on an engine thread while the event loop runs: it
 * touches only the job's body fields (see ngx_http_fephp_job_s), no nginx
 * structure and no log.  The library never overlaps two calls and makes none
 * after the completion, so these fields need no lock.
 *
 * It fills buf across parts, short only at the end of the body: PHP takes a
 * short read of its SAPI's read_post as the end of the body.  A read error,
 * or a file shorter than nginx said, is -1: the library fails the request.
 */

ptrdiff_t
ngx_http_fephp_body_read(void *ctx, uint8_t *buf, size_t cap)
{
    ngx_http_fephp_job_t *job = ctx;

    size_t                  len, done;
    ssize_t                 n;
    ngx_http_fephp_part_t  *part;

    if (cap > NGX_MAX_SIZE_T_VALUE / 2) {
        cap = NGX_MAX_SIZE_T_VALUE / 2;      /* fits a ptrdiff_t */
    }

    done = 0;

    while (done < cap && job->part < job->nparts) {
        part = &job->parts[job->part];

        if (part->size == 0) {
            job->part++;
            continue;
        }

        len = cap - done;

        if ((off_t) len > part->size) {
            len = (size_t) part->size;
        }

        if (part->data) {
            memcpy(buf + done, part->data, len);
            part->data += len;
            n = len;

        } else {
            do {
                n = pread(job->body_fd, buf + done, len, part->offset);
            } while (n == -1 && errno == EINTR);

            if (n <= 0) {
                return -1;
            }

            part->offset += n;
        }

        part->size -= n;
        done += n;
    }

    return done;
}


void
ngx_http_fephp_body_free(ngx_http_fephp_job_t *job)
{
    /* event loop, with the job: the engine reads the body no more */

    if (job->body_fd != NGX_INVALID_FILE) {
        (void) close(job->body_fd);
        job->body_fd = NGX_INVALID_FILE;
    }

    if (job->parts) {
        ngx_free(job->parts);
        job->parts = NULL;
    }
}
