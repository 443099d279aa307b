//! `relay-monoio --listen ADDR --backend ADDR [--core N] [--splice off|poll|uring|auto]`: see
//! `wtgate_relay::monoio_relay` and `wtgate_relay::splice_relay`.

fn main() {
    let args = wtgate_relay::Args::from_env();
    wtgate_relay::exit_on_error("relay-monoio", wtgate_relay::monoio_relay::run(args));
}
