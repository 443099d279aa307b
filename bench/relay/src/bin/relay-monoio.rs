//! `relay-monoio --listen ADDR --backend ADDR [--core N]`: see `wtgate_relay::monoio_relay`.

fn main() {
    let args = wtgate_relay::Args::from_env();
    wtgate_relay::exit_on_error("relay-monoio", wtgate_relay::monoio_relay::run(args));
}
