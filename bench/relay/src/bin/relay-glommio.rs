//! `relay-glommio --listen ADDR --backend ADDR [--core N]`: see `wtgate_relay::glommio_relay`.

fn main() {
    let args = wtgate_relay::Args::from_env();
    wtgate_relay::exit_on_error("relay-glommio", wtgate_relay::glommio_relay::run(args));
}
