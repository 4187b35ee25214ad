//! A PHP backend as the engine sees it: the document root's script resolution
//! in front of a runner (the embedded interpreter or PHP-FPM). Both PHP backends
//! are a `Php<R>`: only how a resolved script runs differs.

use super::cgi::{self, CgiVars};
use super::resolve::{self, Resolution};
use super::sendfile::{ClientRequest, Sendfile};
use crate::backends::serve::{Backend, Reply, Target};
use crate::backends::static_files::{self, StaticFiles};
use crate::http::{framing, Completion, Request, Response};
use crate::metrics::Source;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The PHP document root as both PHP backends see it.
pub struct Site {
    /// Opens files below the root (resolution) and serves its non-PHP files.
    pub files: StaticFiles,
    /// Absolute path, for SCRIPT_FILENAME and DOCUMENT_ROOT.
    pub root: PathBuf,
    pub front_controller: Option<String>,
    /// The front controller answers only as the fallback (`[php]
    /// front_controller_internal`): its own URL is a 404.
    pub front_controller_internal: bool,
    /// Existing non-PHP files are served only when static serving is enabled.
    pub serve_static: bool,
    /// `[backend.sendfile]` when enabled: scripts may answer with a file.
    pub sendfile: Option<Arc<Sendfile>>,
}

impl Site {
    /// Whether `path` names the front controller itself (`/index.php`,
    /// `/index.php/more`) rather than reaching it as the fallback.
    fn is_front_controller_url(&self, path: &str, resolution: &Resolution) -> bool {
        let (Some(fc), Resolution::Script { script_name, .. }) =
            (&self.front_controller, resolution)
        else {
            return false;
        };
        let own = format!("/{}", fc.trim_start_matches('/'));
        *script_name == own
            && path
                .strip_prefix(own.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// Runs a resolved script: queues it with its file name and CGI variables; the
/// completion gets the response.
pub trait Runner: Send + Sync {
    /// Whom its answers are counted for.
    const SOURCE: Source;
    fn run(&self, req: &Request<'_>, filename: &Path, vars: CgiVars, complete: Completion);
}

/// A PHP backend: `site`'s resolution in front of `runner`.
pub struct Php<R> {
    pub site: Arc<Site>,
    pub runner: R,
}

impl<R> std::ops::Deref for Php<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.runner
    }
}

impl<R: Runner> Backend for Php<R> {
    fn serve(
        &self,
        req: &Request<'_>,
        target: &Target<'_>,
        reply: Reply,
        body_ready: bool,
    ) -> Result<(), Reply> {
        let site = &self.site;
        let source = R::SOURCE;
        let normalized = target.normalized;
        let resolution = resolve::resolve(
            site.files.docroot(),
            normalized,
            site.front_controller.as_deref(),
        );
        if site.front_controller_internal && site.is_front_controller_url(normalized, &resolution) {
            reply.now(source, Response::error(404, None));
            return Ok(());
        }
        match resolution {
            // The script will read the body: the host reads it first.
            Resolution::Script { .. } if !body_ready => return Err(reply),
            Resolution::Script {
                script_name,
                path_info,
            } => {
                let vars = cgi::variables(req, &site.root, &script_name, &path_info, target.query);
                let filename = site.root.join(script_name.trim_start_matches('/'));
                let complete = reply.later(source);
                // A file the script names (X-Sendfile) replaces its body; whatever
                // headers the script set, the response is framed truly.
                let (head, script) = (req.is_head(), filename.display().to_string());
                let sendfile = site.sendfile.clone().map(|s| (s, ClientRequest::of(req)));
                let complete: Completion = Box::new(move |mut resp| {
                    if let Some((sendfile, client)) = sendfile {
                        resp = sendfile.apply(resp, &client, &script);
                    }
                    framing::sanitize(&mut resp, head, &script);
                    complete(resp)
                });
                self.runner.run(req, &filename, vars, complete);
            }
            Resolution::Static if site.serve_static => {
                return Backend::serve(&site.files, req, target, reply, body_ready);
            }
            // A redirect would tell that a hidden directory (`/.git`) exists.
            Resolution::AddSlash if static_files::is_hidden(normalized) => {
                reply.now(source, Response::error(404, None))
            }
            Resolution::AddSlash => {
                reply.now(source, static_files::add_slash(normalized, target.query))
            }
            Resolution::Static | Resolution::NotFound => {
                reply.now(source, Response::error(404, None))
            }
            Resolution::Unavailable => reply.now(source, Response::error(503, None)),
        }
        Ok(())
    }
}
