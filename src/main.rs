//! `keepty`: parse the command line, bind, print the startup line, serve.

use std::io::Write;
use std::process::ExitCode;

use keepty::config::{self, Cli};
use keepty::event_loop::Server;
use keepty::upgrade::handoff;

fn main() -> ExitCode {
    // Asked by a running keepty before it upgrades into this binary (docs/upgrade.md).
    if std::env::args().nth(1).as_deref() == Some(handoff::CHECK_FLAG) {
        // With the server's arguments after it, their configuration must load too: a token
        // file or certificate the new process could not read would end every session.
        let rest: Vec<String> = std::env::args().skip(2).collect();
        if !rest.is_empty() {
            let loaded = match config::parse_args(rest) {
                Ok(Cli::Run(cfg)) => Server::check_config(&cfg),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = loaded {
                eprintln!("the configuration does not load: {e}");
                return ExitCode::from(2);
            }
        }
        println!("{}", handoff::check_answer());
        return ExitCode::SUCCESS;
    }
    let cfg = match config::parse_args(std::env::args().skip(1)) {
        Ok(Cli::Run(cfg)) => cfg,
        Ok(Cli::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Version) => {
            println!("keepty {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Client(name, args)) => return ExitCode::from(keepty::cli::run(&name, args)),
        Err(e) => {
            eprintln!("keepty: {e}\nTry 'keepty --help'.");
            return ExitCode::from(2);
        }
    };
    let cfg_warning = cfg.transport_warning();
    let memory_line = keepty::startup::memory_line(&cfg);
    let upload_line = keepty::startup::upload_line(&cfg);
    let token_file = cfg.token_file.clone();
    let server = match Server::bind(*cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keepty: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let addr = server.local_addr();
    if server.restored() {
        // The startup line was printed once, by the first process; whoever read it may be gone.
        eprintln!("keepty: upgraded in place, listening on {addr}");
        return serve(server);
    }
    let host = match addr.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let scheme = if server.is_tls() { "https" } else { "http" };
    // Tests and scripts read the port from this line, so it goes out before anything else.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "keepty listening on {scheme}://{host}:{}/",
        addr.port()
    );
    let _ = out.flush();
    drop(out);
    eprintln!("keepty: {memory_line}");
    eprintln!("keepty: {upload_line}");
    keepty::reach::announce(addr, scheme, token_file.as_deref());
    if let Some(fp) = server.tls_fingerprint() {
        // What a phone user compares with the certificate their browser shows.
        eprintln!("keepty: TLS certificate SHA-256 fingerprint {fp}");
    }
    if let Some(w) = cfg_warning {
        eprintln!("keepty: {w}");
    }
    serve(server)
}

fn serve(mut server: Server) -> ExitCode {
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keepty: event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}
