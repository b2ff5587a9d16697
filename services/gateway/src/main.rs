use clap::Parser;
use gateway::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = distlab_platform::telemetry::init("gateway");
    let app = Application::build(config).await?;
    distlab_platform::http::cancel_on_signal(app.shutdown_token());
    tracing::info!(addr = %app.local_addr()?, "gateway listening");
    app.run_until_stopped().await
}
