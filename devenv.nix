# devenv (https://devenv.sh): `devenv up` runs the devnet as one process per
# role, from the same config files as `hashpool devnet` and the roles alone
# (state in ./state/<role>). Order: stats services, template provider and
# mint first, then the pool, the translator and the CPU miner. Build once with
# `cargo build --release --workspace` (the first build takes a while).
{ pkgs, ... }:

let
  role = name: "cargo run --release --locked -q -p ${name} -- --config config/${name}.toml";
  after = names: {
    depends_on = builtins.listToAttrs (map (n: {
      name = n;
      value = { condition = "process_healthy"; };
    }) names);
  };
  # A role is healthy once it accepts TCP connections on its port.
  listening = port: {
    readiness_probe = {
      exec.command = "${pkgs.netcat}/bin/nc -z 127.0.0.1 ${toString port}";
      initial_delay_seconds = 1;
      period_seconds = 1;
      failure_threshold = 600;
    };
  };
in
{
  packages = [ pkgs.protobuf pkgs.pkg-config pkgs.netcat ];
  languages.rust.enable = true;

  processes = {
    pool-stats = {
      exec = role "pool-stats";
      process-compose = listening 4000;
    };
    proxy-stats = {
      exec = role "proxy-stats";
      process-compose = listening 4001;
    };
    devnet-tp = {
      exec = role "devnet-tp";
      process-compose = listening 8442;
    };
    mint = {
      exec = role "mint";
      process-compose = listening 34260;
    };
    pool = {
      exec = role "pool";
      process-compose = after [ "devnet-tp" "mint" "pool-stats" ] // listening 34254;
    };
    translator = {
      exec = role "translator";
      process-compose = after [ "pool" "proxy-stats" ] // listening 34255;
    };
    miner = {
      exec = role "miner";
      process-compose = after [ "translator" ];
    };
  };
}
