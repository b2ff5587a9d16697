use clap::Parser;
use inventory::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = distlab_platform::telemetry::init("inventory");
    let app = Application::build(config).await?;
    distlab_platform::http::cancel_on_signal(app.shutdown_token());
    tracing::info!(addr = %app.local_addr()?, "inventory service listening");
    app.run_until_stopped().await
}
