/*
 * ngx_http_fephp_module: the bridge from the engine's threads to the event
 * loop.  A completion or a stream notify that arrives on an engine thread only
 * queues its job under a mutex and writes to an eventfd the event loop
 * watches; every nginx call happens on the event loop thread.
 */


#include "ngx_http_fephp_module.h"


static void ngx_http_fephp_job_free(ngx_http_fephp_job_t *job);
static ngx_uint_t ngx_http_fephp_stream_alive(uintptr_t key);
static void ngx_http_fephp_process(ngx_http_fephp_job_t *job);


/*
 * Per-process state.  Not ngx_notify(): the epoll module keeps one handler
 * for the whole process, which the thread pool ("aio threads") also sets, so
 * two users would steal each other's wake-ups.  A private eventfd has none
 * of that and works with every event method.
 */

pthread_mutex_t       ngx_http_fephp_lock = PTHREAD_MUTEX_INITIALIZER;
ngx_queue_t           ngx_http_fephp_ready;     /* jobs with news */
static ngx_uint_t     ngx_http_fephp_nready;
ngx_rbtree_t          ngx_http_fephp_streams;   /* notify targets */
ngx_rbtree_node_t     ngx_http_fephp_sentinel;

int                   ngx_http_fephp_efd = -1;
ngx_connection_t     *ngx_http_fephp_channel;
pthread_t             ngx_http_fephp_loop_thread;
ngx_http_fephp_job_t *ngx_http_fephp_submitting;  /* loop only */
ngx_uint_t            ngx_http_fephp_started;     /* threads run */
ngx_uint_t            ngx_http_fephp_jobs;        /* loop only */


void
ngx_http_fephp_cleanup(void *data)
{
    ngx_http_fephp_job_t  *job = data;

    ngx_uint_t  awaiting;

    /* event loop, r->pool goes: free all, or leave the job to its completion */

    if (job->timer.timer_set) {
        ngx_del_timer(&job->timer);
    }

    job->request = NULL;

    pthread_mutex_lock(&ngx_http_fephp_lock);

    awaiting = job->awaiting;

    if (!awaiting) {
        if (job->queued) {
            ngx_queue_remove(&job->queue);
            job->queued = 0;
            ngx_http_fephp_nready--;
        }

        if (job->in_tree) {
            ngx_rbtree_delete(&ngx_http_fephp_streams, &job->node);
            job->in_tree = 0;
        }
    }

    pthread_mutex_unlock(&ngx_http_fephp_lock);

    if (awaiting) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "fephp: request gone while the engine works on it");
        return;
    }

    /* out of the tree first: a notify racing with this finds nothing */
    fephp_response_free(job->response);
    ngx_http_fephp_job_free(job);
}


static void
ngx_http_fephp_job_free(ngx_http_fephp_job_t *job)
{
    /* event loop: the last reference to the job, its completion has run */

    ngx_http_fephp_body_free(job);

    ngx_http_fephp_jobs--;
    ngx_free(job);
}


void
ngx_http_fephp_on_response(void *userdata, fephp_result result,
    fephp_response *response)
{
    ngx_uint_t             wake;
    ngx_http_fephp_job_t  *job;

    /* once, any thread, no nginx calls; the job lives until the loop has it */

    job = userdata;
    wake = 0;

    pthread_mutex_lock(&ngx_http_fephp_lock);

    job->result = result;
    job->response = response;
    job->awaiting = 0;

    if (pthread_equal(pthread_self(), ngx_http_fephp_loop_thread)
        && ngx_http_fephp_submitting == job)
    {
        /* inside fephp_handle_request_async(): the caller takes it from here */
        job->inline_done = 1;

    } else {
        wake = ngx_http_fephp_enqueue(job);
    }

    pthread_mutex_unlock(&ngx_http_fephp_lock);

    if (wake) {
        ngx_http_fephp_wake();
    }
}


void
ngx_http_fephp_on_body(void *userdata)
{
    uintptr_t   key;
    ngx_uint_t  wake;

    /*
     * A stream may have moved; any thread.  The library can call this just
     * after the response was freed, so userdata is only compared with live
     * jobs, never dereferenced, until found in the tree under the lock.
     */

    key = (uintptr_t) userdata;
    wake = 0;

    pthread_mutex_lock(&ngx_http_fephp_lock);

    if (ngx_http_fephp_stream_alive(key)) {
        wake = ngx_http_fephp_enqueue((ngx_http_fephp_job_t *) key);
    }

    pthread_mutex_unlock(&ngx_http_fephp_lock);

    if (wake) {
        ngx_http_fephp_wake();
    }
}


static ngx_uint_t
ngx_http_fephp_stream_alive(uintptr_t key)
{
    ngx_rbtree_node_t  *node, *sentinel;

    /* under the lock: whether a job with this address waits for its stream */

    node = ngx_http_fephp_streams.root;
    sentinel = ngx_http_fephp_streams.sentinel;

    while (node != sentinel) {

        if ((ngx_rbtree_key_t) key < node->key) {
            node = node->left;

        } else if ((ngx_rbtree_key_t) key > node->key) {
            node = node->right;

        } else {
            return 1;
        }
    }

    return 0;
}


ngx_uint_t
ngx_http_fephp_enqueue(ngx_http_fephp_job_t *job)
{
    /* under the lock: queues the job once; 1 when the loop must be woken */

    if (job->queued) {
        return 0;
    }

    ngx_queue_insert_tail(&ngx_http_fephp_ready, &job->queue);
    job->queued = 1;
    ngx_http_fephp_nready++;

    return 1;
}


void
ngx_http_fephp_wake(void)
{
    ssize_t   n;
    uint64_t  one;

    /* any thread: makes the eventfd readable; no logging (the loop's) */

    one = 1;

    do {
        n = write(ngx_http_fephp_efd, &one, sizeof(uint64_t));
    } while (n == -1 && ngx_errno == NGX_EINTR);

    /* EAGAIN means the counter is at its maximum: readable, nothing lost */
}


void
ngx_http_fephp_wake_handler(ngx_event_t *rev)
{
    ssize_t                n;
    uint64_t               count;
    ngx_uint_t             todo;
    ngx_queue_t           *q;
    ngx_http_fephp_job_t  *job;

    /*
     * Event loop: the eventfd is readable, so jobs are queued.  Every
     * enqueue writes the eventfd after it, so what arrives meanwhile brings
     * us back.  c->close from the shutdown timer is ignored: this
     * connection is ours, released in exit_process.
     */

    n = read(ngx_http_fephp_efd, &count, sizeof(uint64_t));

    if (n == -1 && ngx_errno != NGX_EAGAIN) {
        ngx_log_error(NGX_LOG_ALERT, rev->log, ngx_errno,
                      "fephp: read() from the eventfd failed");
    }

    rev->ready = 0;

    pthread_mutex_lock(&ngx_http_fephp_lock);
    todo = ngx_http_fephp_nready;
    pthread_mutex_unlock(&ngx_http_fephp_lock);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rev->log, 0,
                   "fephp wake: %z, %ui job(s) ready", n, todo);

    while (todo--) {

        pthread_mutex_lock(&ngx_http_fephp_lock);

        if (ngx_queue_empty(&ngx_http_fephp_ready)) {
            pthread_mutex_unlock(&ngx_http_fephp_lock);
            break;
        }

        q = ngx_queue_head(&ngx_http_fephp_ready);
        ngx_queue_remove(q);
        ngx_http_fephp_nready--;

        job = ngx_queue_data(q, ngx_http_fephp_job_t, queue);
        job->queued = 0;

        pthread_mutex_unlock(&ngx_http_fephp_lock);

        ngx_http_fephp_process(job);
    }
}


static void
ngx_http_fephp_process(ngx_http_fephp_job_t *job)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    /* event loop, job dequeued: its response arrived or its stream moved */

    r = job->request;

    if (r == NULL) {
        /* only a completion reaches a job whose request is gone */
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "fephp: discarded a response: its client had gone");

        fephp_response_free(job->response);
        ngx_http_fephp_job_free(job);
        return;
    }

    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "fephp process: started:%ui streaming:%ui done:%ui",
                   (ngx_uint_t) job->started, (ngx_uint_t) job->streaming,
                   (ngx_uint_t) job->done);

    if (!job->started) {
        if (job->timer.timer_set) {
            ngx_del_timer(&job->timer);
        }

        rc = ngx_http_fephp_respond(job);

    } else if (job->streaming && !job->done) {
        rc = ngx_http_fephp_pump(job);

    } else {
        /* a notify after the end of the stream */
        return;
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
}
