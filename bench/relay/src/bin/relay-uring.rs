//! `relay-uring --listen ADDR --backend ADDR [--core N]`: see `wtgate_relay::uring_relay`.

fn main() {
    let args = wtgate_relay::Args::from_env();
    wtgate_relay::exit_on_error("relay-uring", wtgate_relay::uring_relay::run(args));
}
