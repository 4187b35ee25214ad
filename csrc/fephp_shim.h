/* State and helpers shared by the shim's own files (fephp_sapi.c, fephp_worker.c).
 * Not part of the engine's interface (that is fephp_sapi.h); include after php.h. */
#ifndef FEPHP_SHIM_H
#define FEPHP_SHIM_H

#include "fephp_sapi.h"

/* The engine's callbacks, set once at startup. */
extern fephp_sapi_callbacks fephp_engine;

/* The request PHP is serving; its ctx is SG(server_context). */
extern const fephp_sapi_request *fephp_current;

/* Whether fastcgi_finish_request() has ended the current response. */
extern int fephp_finished;

/* Makes `req` the current request: SG(server_context) and SG(request_info). */
void fephp_bind_request(const fephp_sapi_request *req);

/* Moves the process into the directory of `script` unless it is there already. */
void fephp_enter_script_dir(const char *script);

PHP_FUNCTION(fephp_handle_request);
PHP_FUNCTION(headers_send);

#endif
