/*
 * ngx_http_fephp_module: what its three files share — the configuration and
 * job types, the per-process bridge state, and the functions one file calls
 * in another.
 *
 *   ngx_http_fephp_module.c    directives, process life, request start
 *   ngx_http_fephp_bridge.c    engine threads -> event loop (completions,
 *                              stream notifies, the eventfd)
 *   ngx_http_fephp_response.c  response headers and the body pump
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


/* a piece of a request body: in memory (mem) or a range of nginx's temp file */
typedef struct {
    u_char                     *mem;
    off_t                       pos;
    size_t                      len;
} ngx_http_fephp_piece_t;


/*
 * A request body the engine pulls through body_read, on an engine thread.
 * The job owns it: memory pieces are copied and the temp file's descriptor is
 * dup()ed, because nginx frees both with the request, which may end (a client
 * that leaves) while the engine still reads.  Only body_read touches it once
 * the request is handed over; it is freed with the job, after the completion,
 * and the library never calls body_read after that.
 */
typedef struct {
    ngx_fd_t                    fd;          /* -1: no piece in a file */
    ngx_uint_t                  n;
    ngx_uint_t                  next;        /* the piece being read */
    size_t                      off;         /* bytes of it already read */
    ngx_http_fephp_piece_t      pieces[1];
} ngx_http_fephp_body_t;

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

    /* event loop only */
    ngx_http_request_t         *request;     /* NULL once the request is gone */
    ngx_event_t                 timer;       /* fephp_timeout on the engine */
    ngx_msec_t                  timeout;
    ngx_chain_t                *free;
    ngx_chain_t                *busy;

    ngx_http_fephp_body_t      *body;        /* NULL: none, or in req.body */

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
ngx_int_t ngx_http_fephp_last_error(ngx_pool_t *pool, ngx_str_t *msg);
void ngx_http_fephp_body_free(ngx_http_fephp_body_t *body);


#endif /* _NGX_HTTP_FEPHP_MODULE_H_INCLUDED_ */
