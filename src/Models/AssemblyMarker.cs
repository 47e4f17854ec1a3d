namespace QLoraNet.Models;
