using EfficientVlm.Silo;
using EfficientVlm.Silo.Gateway;

var builder = WebApplication.CreateBuilder(args);
builder.AddFleetSilo();
builder.AddFleetGateway();

var app = builder.Build();
app.MapFleetHealth();
app.MapFleetGateway();
app.Run();
