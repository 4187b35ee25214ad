/*
 * ngx_http_fephp_module: what its three files share — the configuration and
 * job types, the per-process bridge state, and the functions one file calls
 * in another.
 *
 *   ngx_http_fephp_module.c    directives, process life, request start
 *   ngx_http_fephp_bridge.c    engine threads -> event loop (completions,
 *                              stream notifies, the eventfd)
 *   ngx_http_fephp_response.c  response headers and the body pump
 *   ngx_http_fephp_body.c      the request body, served to the engine's
 *                              threads through body_read
 */


#ifndef _NGX_HTTP_FEPHP_MODULE_H_INCLUDED_
#define _NGX_HTTP_FEPHP_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>

#include <fe_php.h>


/* a streamed body is read into buffers of this size ... */
#define NGX_HTTP_FEPHP_STREAM_BUF_SIZE  (64 * 1024)
/* ... and at most this many are on their way to the client at once */
#define NGX_HTTP_FEPHP_STREAM_BUFS      4


typedef struct {
    ngx_str_t                   config;
    const fephp_engine         *engine;
    u_char                     *used_file;
    ngx_uint_t                  used_line;
} ngx_http_fephp_main_conf_t;


typedef struct {
    ngx_flag_t                  enable;
    ngx_msec_t                  timeout;
} ngx_http_fephp_loc_conf_t;


typedef struct ngx_http_fephp_job_s  ngx_http_fephp_job_t;


/*
 * One piece of a request body, in the order of r->request_body->bufs: bytes
 * the job holds a copy of (data), or a range of nginx's temp file (data is
 * NULL, read from the job's duplicate of its descriptor).
 */
typedef struct {
    u_char                     *data;
    off_t                       offset;      /* in the file; data == NULL */
    off_t                       size;        /* bytes not yet served */
} ngx_http_fephp_part_t;

/*
 * One request handed to the engine.  Allocated with ngx_alloc(), not from the
 * request pool: it outlives the request when the client leaves while the
 * engine still owes the completion.
 */
struct ngx_http_fephp_job_s {
    /* under ngx_http_fephp_lock: engine threads touch these */
    ngx_queue_t                 queue;       /* in ngx_http_fephp_ready */
    ngx_rbtree_node_t           node;        /* in ngx_http_fephp_streams */
    ngx_uint_t                  queued;
    ngx_uint_t                  in_tree;
    ngx_uint_t                  awaiting;    /* the completion has not run */
    fephp_result                result;
    fephp_response             *response;   /* ours once awaiting is 0 */

    /*
     * The request body served by ngx_http_fephp_body_read().  Filled on the
     * event loop before the engine learns of the job; from then on only the
     * engine reads them (one body_read call at a time, none after the
     * completion), and the event loop frees them with the job, after the
     * completion (awaiting is 0, read under the lock).  None points into
     * the request: the job outlives it, and nginx closes its temp file with
     * the request pool.
     */
    ngx_http_fephp_part_t      *parts;       /* ngx_alloc()'d, copies after */
    ngx_uint_t                  nparts;
    ngx_uint_t                  part;        /* the first with bytes left */
    ngx_fd_t                    body_fd;     /* dup() of the temp file, or -1 */

    /* event loop only */
    ngx_http_request_t         *request;     /* NULL once the request is gone */
    ngx_event_t                 timer;       /* fephp_timeout on the engine */
    ngx_msec_t                  timeout;
    ngx_chain_t                *free;
    ngx_chain_t                *busy;

    unsigned                    inline_done:1;
    unsigned                    started:1;
    unsigned                    streaming:1;
    unsigned                    done:1;
};


extern ngx_module_t  ngx_http_fephp_module;

extern pthread_mutex_t       ngx_http_fephp_lock;
extern ngx_queue_t           ngx_http_fephp_ready;
extern ngx_rbtree_t          ngx_http_fephp_streams;
extern ngx_rbtree_node_t     ngx_http_fephp_sentinel;
extern int                   ngx_http_fephp_efd;
extern ngx_connection_t     *ngx_http_fephp_channel;
extern pthread_t             ngx_http_fephp_loop_thread;
extern ngx_http_fephp_job_t *ngx_http_fephp_submitting;
extern ngx_uint_t            ngx_http_fephp_started;
extern ngx_uint_t            ngx_http_fephp_jobs;


ngx_int_t ngx_http_fephp_respond(ngx_http_fephp_job_t *job);
ngx_int_t ngx_http_fephp_pump(ngx_http_fephp_job_t *job);
void ngx_http_fephp_timeout_handler(ngx_event_t *ev);
void ngx_http_fephp_cleanup(void *data);
void ngx_http_fephp_on_response(void *userdata, fephp_result result,
    fephp_response *response);
void ngx_http_fephp_on_body(void *userdata);
ngx_uint_t ngx_http_fephp_enqueue(ngx_http_fephp_job_t *job);
void ngx_http_fephp_wake(void);
void ngx_http_fephp_wake_handler(ngx_event_t *rev);
ngx_int_t ngx_http_fephp_body_init(ngx_http_request_t *r,
    ngx_http_fephp_job_t *job, fephp_request *req);
ptrdiff_t ngx_http_fephp_body_read(void *ctx, uint8_t *buf, size_t cap);
void ngx_http_fephp_body_free(ngx_http_fephp_job_t *job);
ngx_int_t ngx_http_fephp_last_error(ngx_pool_t *pool, ngx_str_t *msg);


#endif /* _NGX_HTTP_FEPHP_MODULE_H_INCLUDED_ */
