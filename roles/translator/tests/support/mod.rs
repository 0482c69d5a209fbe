pub mod sv1_client;
